"""Database layer: engine, tables, migrations and data functions (one module per resource).

Data functions take an ``AsyncSession`` and never commit; the API route that calls
them owns the transaction.
"""

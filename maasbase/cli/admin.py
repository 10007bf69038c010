"""Administrative commands that work on the database directly (no running server needed)."""

from __future__ import annotations

from rich.console import Console

from maasbase.cli.serve import Database
from maasbase.common.config import Settings
from maasbase.server.bootstrap import ADMIN_USERNAME, PASSWORD_FILE, write_secret_file
from maasbase.server.db import engine as db_engine
from maasbase.server.db import migrate
from maasbase.server.db import users as users_db
from maasbase.server.security import passwords


async def reset_admin_password(settings: Settings, password: str | None, console: Console) -> None:
    if password is not None:
        passwords.check_strength(password)
    new_password = password or passwords.generate_password()
    async with Database(settings) as url:
        engine = db_engine.create_engine(url)
        try:
            await migrate.upgrade(engine)
            async with db_engine.session_factory(engine)() as session:
                user = await users_db.get_by_username(session, ADMIN_USERNAME)
                hashed = await passwords.hash_password(new_password)
                if user is None:
                    await users_db.create(
                        session, username=ADMIN_USERNAME, password_hash=hashed, is_admin=True
                    )
                else:
                    users_db.set_password(user, hashed)
                    user.is_active = True
                    user.is_admin = True
                await session.commit()
        finally:
            await engine.dispose()
    if password is None:
        path = settings.data_dir / PASSWORD_FILE
        write_secret_file(path, new_password)
        console.print(f"New password for user admin written to {path} (mode 0600).")
    else:
        console.print("Password for user admin changed; existing sessions of admin ended.")

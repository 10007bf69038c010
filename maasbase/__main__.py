from maasbase.cli.main import main

main()

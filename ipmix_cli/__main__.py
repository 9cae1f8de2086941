from ipmix_cli.cli import main

main()

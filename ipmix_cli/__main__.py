from ipmix_cli.cli.main import main

main()

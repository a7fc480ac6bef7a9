from dataplan.cli.app import main

main()

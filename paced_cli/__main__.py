from paced_cli import main

main()

from scientist.cli import main

main()

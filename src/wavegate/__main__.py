from wavegate.cli import main

main()

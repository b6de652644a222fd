from creditline.cli import main

main()

from softmax.cli import main

main()

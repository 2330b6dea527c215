from parity.cli import console_main

console_main()

"""`python -m qarac ...` (and `torchrun -m qarac train ...`)."""

from qarac.cli import main

if __name__ == "__main__":
    main()

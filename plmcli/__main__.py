"""Run plm as ``python -m plmcli``, which is also how torchrun and accelerate launch it."""

from plmcli.cli import main

if __name__ == "__main__":
    main()

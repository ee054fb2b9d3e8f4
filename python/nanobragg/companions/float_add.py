"""placeholder until implemented"""
import sys


def main(argv=None) -> int:
    sys.stderr.write("float_add: error: not implemented yet\n")
    return 1

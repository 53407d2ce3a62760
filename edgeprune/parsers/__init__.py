"""Parsers that turn device tools' text output (trtexec, tegrastats, Jetson system files)
into numbers. Pure functions on strings, so they are tested on real captured output."""

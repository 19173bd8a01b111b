#!/bin/sh
# The C unit tests: one binary, TAP on stdout.
exec "$UNIT"

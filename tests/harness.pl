#!/usr/bin/perl
# tests/harness.pl JOBS EXEC FILE... - runs the test files through
# TAP::Harness (what prove is built on), JOBS at once, each through EXEC
# (tests/tap-exec), with prove's --timer output and its "Result:" line.
# The Lua specs (*_spec.lua) share the registries tests/run.sh starts, so
# they run one after another, as one chain that starts first and runs beside
# the other files. (prove's --rules cannot say this: its "par=GLOB" gives
# each file a slot of its own ahead of any group, so the chain of specs
# would only start once every other file had.) Exits 0 when all passed.
use strict;
use warnings;
use TAP::Harness;

my ($jobs, $exec, @files) = @ARGV;
die "usage: harness.pl JOBS EXEC FILE...\n" unless $jobs && $exec && @files;
my @specs = grep { /_spec\.lua$/ } @files;
my @rest = grep { !/_spec\.lua$/ } @files;
my @groups;
push @groups, { seq => [@specs] } if @specs;
push @groups, { par => [@rest] } if @rest;
my $harness = TAP::Harness->new({
    jobs  => $jobs,
    timer => 1,
    exec  => [$exec],
    rules => { par => [@groups] },
});
my $aggregate = $harness->runtests(@files);
exit($aggregate->all_passed ? 0 : 1);

# replica - hand-written Makefile. Dependencies come through pkg-config
# (http-parser has no .pc file: it is linked by name).
#   make          build ./replica and the web console (installs missing Debian packages first)
#   make test     C unit tests and Lua specs against real servers on loopback
#                 (T='tests/e2e/x.t ...' runs just those files)
#   make check    the same suite under ASan + UBSan, then valgrind's leak check
#   make bench    benchmarks (figures go in docs/benchmarks.md), the console's last
#   make bench-far      the far-registry figures only (the source behind faultproxy at 40 ms)
#   make bench-console  the web console's figures only (bundle, execution page, save-to-run)
#   make soak     replica serve under a mixed load for 30 min (SOAK_MINUTES=), failing on
#                 RSS or fd growth or an execution that ends wrong (bench/soak.sh)
#   make fuzz     libFuzzer on every parser of outside input, FUZZ_SECS (60)
#                 seconds per target (FUZZ_TARGETS='link cron' for some);
#                 not part of test or check (docs/fuzzing.md)
#   make deps     install every Debian package the targets need
#   make install  PREFIX=/usr/local DESTDIR=: the binary, scripts, console, docs
#                 and the systemd unit (docs/install.md); make uninstall

PKGS     := lua5.4 libcurl libevent libssl libcrypto lua5.4-cjson sqlite3 libedit
CC       ?= cc
WARN     := -Wall -Wextra -Wstrict-prototypes -Wwrite-strings -Wshadow
CFLAGS   ?= -O2 -g
# The binary finds its scripts and console relative to itself (BIN/../share/
# replica, or this tree when it runs from it); PREFIX, compiled in, is only
# the last place it looks (`replica --help` gives the order).
PREFIX   ?= /usr/local
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -pthread $(WARN) $(CFLAGS) $(EXTRA_CFLAGS) \
             $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -DREPLICA_PREFIX='"$(PREFIX)"'
LIBS     = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lhttp_parser -lm -pthread

ENGINE_SRC := $(filter-out engine/main.c,$(wildcard engine/*.c))
BUILD    ?= build/release
OBJ      := $(ENGINE_SRC:engine/%.c=$(BUILD)/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)

.PHONY: all deps deps-test deps-bench deps-fuzz fuzz fuzz-build test check valgrind bench bench-serve \
        bench-far bench-console soak clean run web install uninstall

all: replica web

deps:
	@tools/deps.sh build
deps-test:
	@tools/deps.sh test
deps-bench:
	@tools/deps.sh bench
deps-fuzz:
	@tools/deps.sh fuzz

replica: deps $(BUILD)/replica
	@cp $(BUILD)/replica replica.tmp && mv -f replica.tmp replica

$(BUILD)/replica: $(OBJ) $(BUILD)/main.o
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/%.o: engine/%.c engine/*.h | $(BUILD)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/unit: $(UNIT_SRC) tests/unit/*.h $(OBJ) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -Iengine -o $@ $(UNIT_SRC) $(OBJ) $(LIBS)

$(BUILD):
	@mkdir -p $(BUILD)

# The web console: npm packages pinned by web/package-lock.json, bundled by
# esbuild into build/web (served by `replica serve` at /).
WEB_SRC := $(wildcard web/src/*.js web/src/*/*.js web/src/*.css) web/index.html web/build.mjs
web: build/web/index.html
build/web/index.html: web/node_modules/.package-lock.json $(WEB_SRC)
	@cd web && node build.mjs
web/node_modules/.package-lock.json: web/package-lock.json web/package.json
	@tools/deps.sh node
	@cd web && npm ci --no-audit --no-fund --loglevel=error

build/faultserver: tests/faultserver.c
	@mkdir -p build
	$(CC) -std=c11 -D_GNU_SOURCE -Wall -Wextra -O2 -o $@ $<

build/faultproxy: tests/faultproxy.c
	@mkdir -p build
	$(CC) -std=c11 -D_GNU_SOURCE -Wall -Wextra -O2 -o $@ $<

test: deps-test replica web $(BUILD)/unit build/faultserver build/faultproxy
	@REPLICA=$(CURDIR)/$(BUILD)/replica UNIT=$(CURDIR)/$(BUILD)/unit tests/run.sh $(T)

check: deps-test web build/faultserver build/faultproxy
	@$(MAKE) --no-print-directory BUILD=build/asan \
	    CFLAGS='-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all' \
	    build/asan/replica build/asan/unit
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 SANITIZED=1 \
	    REPLICA=$(CURDIR)/build/asan/replica UNIT=$(CURDIR)/build/asan/unit tests/run.sh
	@$(MAKE) --no-print-directory valgrind

valgrind: deps-test replica $(BUILD)/unit build/faultserver build/faultproxy
	@VALGRIND=1 REPLICA=$(CURDIR)/$(BUILD)/replica UNIT=$(CURDIR)/$(BUILD)/unit tests/run.sh

# The fuzz targets: the engine's objects built by clang with the fuzzer's
# coverage and ASan + UBSan into build/fuzz, one binary per
# tests/fuzz/fuzz_<name>.c, run one at a time by tests/fuzz/run.sh.
FUZZ_SECS ?= 60
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_TARGETS ?= $(FUZZ_NAMES)
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all

fuzz: deps-fuzz fuzz-build
	@FUZZ_SECS=$(FUZZ_SECS) tests/fuzz/run.sh $(FUZZ_TARGETS)

fuzz-build:
	@$(MAKE) --no-print-directory BUILD=build/fuzz CC=clang \
	    CFLAGS='-O1 -g -fno-omit-frame-pointer -Wno-for-loop-analysis -fsanitize=fuzzer-no-link $(FUZZ_SAN)' \
	    $(FUZZ_NAMES:%=build/fuzz/fuzz_%)

$(BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/harness.c tests/fuzz/harness.h $(OBJ) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -fsanitize=fuzzer -Iengine -Itests/fuzz -o $@ $< tests/fuzz/harness.c $(OBJ) $(LIBS)

bench: deps-bench replica web build/faultserver build/faultproxy
	@REPLICA=$(CURDIR)/$(BUILD)/replica bench/run.sh

bench-serve: deps-bench replica
	@REPLICA=$(CURDIR)/$(BUILD)/replica bench/serve.sh

bench-far: deps-bench replica build/faultproxy
	@REPLICA=$(CURDIR)/$(BUILD)/replica bench/far.sh

soak: deps-bench replica
	@REPLICA=$(CURDIR)/$(BUILD)/replica bench/soak.sh

bench-console: deps-bench replica web
	@REPLICA=$(CURDIR)/$(BUILD)/replica bench/console.sh

run: replica web
	./replica serve

# What `make install` writes under $(DESTDIR)$(PREFIX): bin/replica (which
# finds share/replica beside itself), share/replica/{scripts,web},
# share/doc/replica, and the unit in lib/systemd/system (a directory systemd
# searches for /usr/local and /usr alike), rewritten for PREFIX. Builds
# nothing it can use as is: build first, as the user who builds.
UNITDIR  ?= $(PREFIX)/lib/systemd/system
DATADIR  := $(DESTDIR)$(PREFIX)/share/replica
DOCDIR   := $(DESTDIR)$(PREFIX)/share/doc/replica
install: $(BUILD)/replica build/web/index.html
	install -d $(DESTDIR)$(PREFIX)/bin $(DATADIR) $(DOCDIR) $(DESTDIR)$(UNITDIR)
	install -m 755 $(BUILD)/replica $(DESTDIR)$(PREFIX)/bin/replica
	rm -rf $(DATADIR)/scripts $(DATADIR)/web
	cp -R scripts $(DATADIR)/scripts
	cp -R build/web $(DATADIR)/web
	chmod -R u=rwX,go=rX $(DATADIR)
	install -m 644 README.md LICENSE docs/*.md docs/openapi.yaml $(DOCDIR)
	sed 's|/usr/local/|$(PREFIX)/|g' deploy/replica.service >$(DESTDIR)$(UNITDIR)/replica.service
	chmod 644 $(DESTDIR)$(UNITDIR)/replica.service

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/replica $(DESTDIR)$(UNITDIR)/replica.service
	rm -rf $(DATADIR) $(DOCDIR)

clean:
	rm -rf build replica

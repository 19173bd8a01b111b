# replica - hand-written Makefile. Dependencies come through pkg-config
# (http-parser has no .pc file: it is linked by name).
#   make          build ./replica and the web console (installs missing Debian packages first)
#   make test     C unit tests and Lua specs against real servers on loopback
#                 (T='tests/e2e/x.t ...' runs just those files)
#   make check    the same suite under ASan + UBSan, then valgrind's leak check
#   make bench    benchmarks (figures go in docs/benchmarks.md), the console's last
#   make bench-console  the web console's figures only (bundle, execution page, save-to-run)
#   make soak     replica serve under a mixed load for 30 min (SOAK_MINUTES=), failing on
#                 RSS or fd growth or an execution that ends wrong (bench/soak.sh)
#   make deps     install every Debian package the targets need

PKGS     := lua5.4 libcurl libevent libcrypto lua5.4-cjson sqlite3 libedit
CC       ?= cc
WARN     := -Wall -Wextra -Wstrict-prototypes -Wwrite-strings -Wshadow
CFLAGS   ?= -O2 -g
# Where the binary looks for scripts/ when neither REPLICA_SCRIPTS nor a
# scripts/ next to it exists: this tree by default, the install path in an
# image (deploy/Dockerfile builds with SCRIPTS_DIR=/usr/share/replica/scripts).
SCRIPTS_DIR ?= $(CURDIR)/scripts
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -pthread $(WARN) $(CFLAGS) $(EXTRA_CFLAGS) \
             $(shell pkg-config --cflags $(PKGS) 2>/dev/null) \
             -DREPLICA_SCRIPTS_DIR='"$(SCRIPTS_DIR)"' -DREPLICA_WEB_DIR='"$(CURDIR)/build/web"'
LIBS     = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lhttp_parser -lm -pthread

ENGINE_SRC := $(filter-out engine/main.c,$(wildcard engine/*.c))
BUILD    ?= build/release
OBJ      := $(ENGINE_SRC:engine/%.c=$(BUILD)/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)

.PHONY: all deps deps-test deps-bench test check valgrind bench bench-serve bench-console soak clean run web

all: replica web

deps:
	@tools/deps.sh build
deps-test:
	@tools/deps.sh test
deps-bench:
	@tools/deps.sh bench

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

bench: deps-bench replica web build/faultserver build/faultproxy
	@REPLICA=$(CURDIR)/$(BUILD)/replica bench/run.sh

bench-serve: deps-bench replica
	@REPLICA=$(CURDIR)/$(BUILD)/replica bench/serve.sh

soak: deps-bench replica
	@REPLICA=$(CURDIR)/$(BUILD)/replica bench/soak.sh

bench-console: deps-bench replica web
	@REPLICA=$(CURDIR)/$(BUILD)/replica bench/console.sh

run: replica web
	./replica serve

clean:
	rm -rf build replica

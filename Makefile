# Makefile for biteship_webhook (PGXS)

MODULE_big = biteship_webhook
EXTENSION = biteship_webhook
DATA = biteship_webhook--0.1.0.sql biteship_webhook--0.1.0--0.2.0.sql \
	biteship_webhook--0.2.0.sql \
	biteship_webhook--0.2.0--0.3.0.sql \
	biteship_webhook--0.3.0.sql biteship_webhook--0.3.0--0.4.0.sql \
	biteship_webhook--0.4.0.sql
PGFILEDESC = "biteship_webhook - Biteship webhook receiver inside PostgreSQL"

# Pure C layers (no backend calls): HTTP framing, transports, payload helpers.
PURE_OBJS = src/http.o src/transport.o src/tls.o src/payload.o src/netaddr.o \
	src/route.o src/signing.o src/outbound_policy.o src/curl_engine.o \
	src/biteship_api.o
# Backend code.
PG_OBJS = src/module.o src/ingest.o src/ingest_sql.o src/stats.o \
	src/listener.o src/dispatcher.o src/outbox.o src/outbound.o \
	src/reconcile.o src/reconciler.o
OBJS = $(PURE_OBJS) $(PG_OBJS)

PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
	-Wno-sign-compare -Wno-cast-function-type
SHLIB_LINK = -lhttp_parser -lcurl -lssl -lcrypto

REGRESS = setup webhooks ingest ordering triggers replay privileges hardening outbox reconcile simulate upgrade
REGRESS_OPTS = --temp-instance=tmp_check_regress --temp-config=test/regress.conf

TAP_TESTS = 1

# make SANITIZE=1: the library and the unit tests built with AddressSanitizer
# and UndefinedBehaviorSanitizer (gcc's runtimes); undefined behaviour aborts.
# The server is not instrumented: it loads this library only with the ASan
# runtime in LD_PRELOAD (scripts/sanitize runs the whole suite that way).
# Objects do not depend on flags: run make clean when switching builds.
ifeq ($(SANITIZE),1)
SANITIZE_FLAGS = -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer -g
PG_CFLAGS += $(SANITIZE_FLAGS)
PG_LDFLAGS += -fsanitize=address,undefined
# (with the sanitizers gcc warns of truncations it cannot rule out: silenced,
# as in the server's own CFLAGS)
unitcheck: UNIT_CFLAGS += $(SANITIZE_FLAGS) -Wno-format-truncation -Wno-stringop-truncation
endif

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies: every object depends on every header.
$(OBJS): $(wildcard $(srcdir)/src/*.h)

# Unit tests of the pure C layers, built without the server.
UNIT_CFLAGS = -g -O1 -Wall -Wextra -Werror -Wno-unused-parameter -Isrc
test/unit/test_http: test/unit/test_http.c src/http.c src/transport.c src/http.h src/transport.h
	$(CC) $(UNIT_CFLAGS) -o $@ test/unit/test_http.c src/http.c src/transport.c -lhttp_parser -lssl -lcrypto
test/unit/test_payload: test/unit/test_payload.c src/payload.c src/payload.h
	$(CC) $(UNIT_CFLAGS) -o $@ test/unit/test_payload.c src/payload.c

test/unit/test_tls: test/unit/test_tls.c src/tls.c src/http.c src/transport.c src/tls.h src/http.h src/transport.h
	$(CC) $(UNIT_CFLAGS) -o $@ test/unit/test_tls.c src/tls.c src/http.c src/transport.c -lhttp_parser -lssl -lcrypto

test/unit/test_netaddr: test/unit/test_netaddr.c src/netaddr.c src/netaddr.h
	$(CC) $(UNIT_CFLAGS) -o $@ test/unit/test_netaddr.c src/netaddr.c

test/unit/test_route: test/unit/test_route.c src/route.c src/route.h src/payload.c src/payload.h
	$(CC) $(UNIT_CFLAGS) -o $@ test/unit/test_route.c src/route.c src/payload.c -lcrypto

test/unit/test_signing: test/unit/test_signing.c src/signing.c src/signing.h
	$(CC) $(UNIT_CFLAGS) -o $@ test/unit/test_signing.c src/signing.c -lcrypto

test/unit/test_outbound_policy: test/unit/test_outbound_policy.c src/outbound_policy.c src/outbound_policy.h
	$(CC) $(UNIT_CFLAGS) -o $@ test/unit/test_outbound_policy.c src/outbound_policy.c

test/unit/test_curl_engine: test/unit/test_curl_engine.c src/curl_engine.c src/curl_engine.h src/outbound_policy.c
	$(CC) $(UNIT_CFLAGS) -D_GNU_SOURCE -o $@ test/unit/test_curl_engine.c src/curl_engine.c src/outbound_policy.c -lcurl -lpthread

test/unit/test_biteship_api: test/unit/test_biteship_api.c src/biteship_api.c src/biteship_api.h
	$(CC) $(UNIT_CFLAGS) -o $@ test/unit/test_biteship_api.c src/biteship_api.c

UNIT_TESTS = test/unit/test_http test/unit/test_payload test/unit/test_tls \
	test/unit/test_netaddr test/unit/test_route test/unit/test_signing \
	test/unit/test_outbound_policy test/unit/test_curl_engine \
	test/unit/test_biteship_api

unitcheck: $(UNIT_TESTS)
	@for t in $(UNIT_TESTS); do echo "$$t"; $$t || exit 1; done

.PHONY: unitcheck

# The TAP tests alone (make installcheck runs pg_regress, then these).
tapcheck:
	$(prove_installcheck)

.PHONY: tapcheck

# --- fuzzing ---
# libFuzzer targets of the pure C layers, built with Debian's clang
# (apt-get install -y clang-14 libclang-rt-14-dev).  See test/fuzz/README.md.
#
#	make fuzz		build test/fuzz/fuzz_http, fuzz_tls, fuzz_payload and fuzz_api
#	make fuzzsmoke	build, then run each one for FUZZ_SMOKE_SECONDS (30) on
#					its seed corpus; fails on any crash, leak or UBSan report
#	make fuzzclean	remove the binaries and the scratch directory
#
# Runs write new inputs, logs and crash reproducers only under
# test/fuzz/out/ (ignored by git); the seed corpora in test/fuzz/corpus/
# are only read.  OpenSSL and http_parser are not instrumented.
FUZZ_CC ?= clang-14
FUZZ_CFLAGS ?= -g -O1 -fno-omit-frame-pointer
FUZZ_WARN ?= -Wall -Wextra -Wno-unused-parameter -Werror
FUZZ_SANITIZE = -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_SMOKE_SECONDS ?= 30
FUZZ_OUT = test/fuzz/out
FUZZ_BINS = test/fuzz/fuzz_http test/fuzz/fuzz_tls test/fuzz/fuzz_payload test/fuzz/fuzz_api
FUZZ_BUILD = $(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_WARN) $(FUZZ_SANITIZE) -Isrc -o $@

# options of every run, then of the smoke run per target
FUZZ_RUN_OPTS = -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10
FUZZ_http_OPTS = -dict=test/fuzz/http.dict -max_len=24576
FUZZ_tls_OPTS = -dict=test/fuzz/http.dict
FUZZ_payload_OPTS = -max_len=16384
FUZZ_api_OPTS = -max_len=65536

test/fuzz/fuzz_http: test/fuzz/fuzz_http.c src/http.c src/transport.c src/route.c \
	src/payload.c $(wildcard src/*.h) | fuzz-check-cc
	$(FUZZ_BUILD) test/fuzz/fuzz_http.c src/http.c src/transport.c src/route.c \
		src/payload.c -lhttp_parser -lssl -lcrypto

test/fuzz/fuzz_tls: test/fuzz/fuzz_tls.c src/tls.c src/http.c src/transport.c \
	$(wildcard src/*.h) | fuzz-check-cc
	$(FUZZ_BUILD) test/fuzz/fuzz_tls.c src/tls.c src/http.c src/transport.c \
		-lhttp_parser -lssl -lcrypto

test/fuzz/fuzz_payload: test/fuzz/fuzz_payload.c src/payload.c src/netaddr.c \
	$(wildcard src/*.h) | fuzz-check-cc
	$(FUZZ_BUILD) test/fuzz/fuzz_payload.c src/payload.c src/netaddr.c

test/fuzz/fuzz_api: test/fuzz/fuzz_api.c src/biteship_api.c \
	$(wildcard src/*.h) | fuzz-check-cc
	$(FUZZ_BUILD) test/fuzz/fuzz_api.c src/biteship_api.c

fuzz-check-cc:
	@command -v $(FUZZ_CC) >/dev/null 2>&1 || { \
		echo "$(FUZZ_CC) not found: apt-get install -y clang-14 libclang-rt-14-dev" >&2; \
		exit 1; }

fuzz: $(FUZZ_BINS)

# One target at a time; new inputs go to a scratch directory that is listed
# first, so the seed corpus (listed second) is never written to.
fuzzsmoke: fuzz
	@set -e; for t in http tls payload api; do \
		case $$t in \
			http) opts='$(FUZZ_http_OPTS)' ;; \
			tls) opts='$(FUZZ_tls_OPTS)' ;; \
			payload) opts='$(FUZZ_payload_OPTS)' ;; \
			api) opts='$(FUZZ_api_OPTS)' ;; \
		esac; \
		rm -rf $(FUZZ_OUT)/$$t; mkdir -p $(FUZZ_OUT)/$$t; \
		echo "fuzzsmoke: fuzz_$$t for $(FUZZ_SMOKE_SECONDS) s"; \
		if ! UBSAN_OPTIONS=print_stacktrace=1 \
			test/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SMOKE_SECONDS) \
				-print_final_stats=1 -artifact_prefix=$(FUZZ_OUT)/$$t- \
				$(FUZZ_RUN_OPTS) $$opts $(FUZZ_OUT)/$$t test/fuzz/corpus/$$t \
				> $(FUZZ_OUT)/$$t.log 2>&1; then \
			tail -n 60 $(FUZZ_OUT)/$$t.log >&2; \
			echo "fuzzsmoke: fuzz_$$t failed, see $(FUZZ_OUT)/$$t.log" >&2; \
			exit 1; \
		fi; \
		grep -E '^#[0-9]+.*DONE' $(FUZZ_OUT)/$$t.log; \
	done

fuzzclean:
	rm -rf $(FUZZ_BINS) $(FUZZ_OUT)

.PHONY: fuzz fuzzsmoke fuzzclean fuzz-check-cc

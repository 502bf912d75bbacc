# Makefile for biteship_webhook (PGXS)

MODULE_big = biteship_webhook
EXTENSION = biteship_webhook
DATA = biteship_webhook--0.1.0.sql biteship_webhook--0.1.0--0.2.0.sql
PGFILEDESC = "biteship_webhook - Biteship webhook receiver inside PostgreSQL"

# Pure C layers (no backend calls): HTTP framing, transports, payload helpers.
PURE_OBJS = src/http.o src/transport.o src/tls.o src/payload.o src/netaddr.o \
	src/route.o
# Backend code.
PG_OBJS = src/module.o src/ingest.o src/ingest_sql.o src/stats.o \
	src/listener.o src/dispatcher.o
OBJS = $(PURE_OBJS) $(PG_OBJS)

PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
	-Wno-sign-compare -Wno-cast-function-type
SHLIB_LINK = -lhttp_parser -lcurl -lssl -lcrypto

REGRESS = setup webhooks ingest ordering triggers replay privileges hardening
REGRESS_OPTS = --temp-instance=tmp_check_regress --temp-config=test/regress.conf

TAP_TESTS = 1

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

unitcheck: test/unit/test_http test/unit/test_payload test/unit/test_tls test/unit/test_netaddr \
	test/unit/test_route
	test/unit/test_http
	test/unit/test_payload
	test/unit/test_tls
	test/unit/test_netaddr
	test/unit/test_route

.PHONY: unitcheck

# The TAP tests alone (make installcheck runs pg_regress, then these).
tapcheck:
	$(prove_installcheck)

.PHONY: tapcheck

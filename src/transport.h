/*-------------------------------------------------------------------------
 *
 * transport.h
 *	  Byte-stream transports under the HTTP connection layer.
 *
 * This file owns the transport interface: a BwTransport is an accepted,
 * non-blocking socket plus a small table of operations (handshake, read,
 * write, shutdown, close) that http.c calls without knowing what is
 * underneath.  The plain-socket implementation lives in transport.c; a TLS
 * implementation can be added next to it without changing http.c.
 *
 * Contract of the operations (every implementation must follow it):
 *
 *	handshake	Make progress on connection set-up.  BW_IO_OK means set-up
 *				is complete (the caller then sets handshake_done);
 *				BW_IO_WANT_READ / BW_IO_WANT_WRITE mean "call again when the
 *				fd is readable / writable"; BW_IO_EOF or BW_IO_ERROR mean the
 *				connection is unusable.  NULL means there is nothing to do.
 *
 *	read		Read up to len (> 0) bytes.  BW_IO_OK with *nread > 0, or
 *				BW_IO_WANT_READ / BW_IO_WANT_WRITE (nothing now: retry when
 *				the fd is readable / writable; a TLS renegotiation may need
 *				to write), BW_IO_EOF on an orderly end of stream, BW_IO_ERROR.
 *
 *	write		Write up to len (> 0) bytes.  BW_IO_OK with *nwritten > 0
 *				(partial writes are fine), BW_IO_WANT_WRITE / BW_IO_WANT_READ,
 *				or BW_IO_ERROR (a peer that went away, EPIPE, is an error).
 *				When a write is retried after a WANT result, http.c passes
 *				a buffer that starts with the same bytes, but possibly at a
 *				different address and with more bytes after them; a TLS
 *				implementation must therefore enable
 *				SSL_MODE_ENABLE_PARTIAL_WRITE and
 *				SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER.
 *
 *	close		Close the fd and free priv and the BwTransport itself.  Must
 *				not block (a TLS implementation should send close_notify at
 *				most once, without waiting for the peer's).
 *
 *	shutdown	Optional (may be NULL).  Orderly close of the sending
 *				direction once all responses are written (FIN, or
 *				close_notify then FIN); reading stays possible so that
 *				unread request bytes can be drained before close.
 *
 *	pending		Optional (may be NULL = always 0).  Bytes already received
 *				and buffered inside the transport (decrypted TLS records)
 *				that a read would return without the fd becoming readable.
 *				http.c keeps reading while this is non-zero.
 *
 * No operation may block, raise signals (writes use MSG_NOSIGNAL) or abort.
 *
 * src/transport.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BW_TRANSPORT_H
#define BW_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>

typedef enum BwIoResult
{
	BW_IO_OK,
	BW_IO_WANT_READ,
	BW_IO_WANT_WRITE,
	BW_IO_EOF,
	BW_IO_ERROR
} BwIoResult;

typedef struct BwTransport BwTransport;

typedef struct BwTransportOps
{
	BwIoResult	(*handshake) (BwTransport *t);	/* may be NULL: nothing to do */
	BwIoResult	(*read) (BwTransport *t, void *buf, size_t len, size_t *nread);
	BwIoResult	(*write) (BwTransport *t, const void *buf, size_t len,
						  size_t *nwritten);
	void		(*close) (BwTransport *t);	/* frees t too */
	BwIoResult	(*shutdown) (BwTransport *t);	/* may be NULL */
	size_t		(*pending) (BwTransport *t);	/* may be NULL */
} BwTransportOps;

struct BwTransport
{
	const BwTransportOps *ops;
	int			fd;
	bool		handshake_done;
	void	   *priv;			/* implementation state (e.g. SSL *) */
};

/* Plain (cleartext) transport over a connected non-blocking socket. */
extern BwTransport *bw_transport_plain_new(int fd);

/* Put fd in non-blocking mode; returns false (errno set) on failure. */
extern bool bw_fd_set_nonblocking(int fd);

#endif							/* BW_TRANSPORT_H */

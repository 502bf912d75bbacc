/*-------------------------------------------------------------------------
 *
 * transport.c
 *	  Transport implementations used by the HTTP connection layer.
 *
 * This file owns the concrete BwTransport implementations.  For now that is
 * the plain-socket transport: read(2)/send(2) on a non-blocking fd, with
 * EAGAIN mapped to BW_IO_WANT_READ / BW_IO_WANT_WRITE.  It is pure C: no
 * PostgreSQL headers, and nothing here blocks or raises SIGPIPE.
 *
 * See transport.h for the contract every implementation follows.
 *
 * src/transport.c
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include "transport.h"

static BwIoResult plain_read(BwTransport *t, void *buf, size_t len,
							 size_t *nread);
static BwIoResult plain_write(BwTransport *t, const void *buf, size_t len,
							  size_t *nwritten);
static BwIoResult plain_shutdown(BwTransport *t);
static void plain_close(BwTransport *t);

static const BwTransportOps plain_ops = {
	.handshake = NULL,
	.read = plain_read,
	.write = plain_write,
	.close = plain_close,
	.shutdown = plain_shutdown,
	.pending = NULL,
};

/*
 * Read from the socket.  EINTR is retried; EAGAIN means no data yet.
 */
static BwIoResult
plain_read(BwTransport *t, void *buf, size_t len, size_t *nread)
{
	*nread = 0;
	for (;;)
	{
		ssize_t		n = read(t->fd, buf, len);

		if (n > 0)
		{
			*nread = (size_t) n;
			return BW_IO_OK;
		}
		if (n == 0)
			return BW_IO_EOF;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return BW_IO_WANT_READ;
		return BW_IO_ERROR;
	}
}

/*
 * Write to the socket without raising SIGPIPE.  send(2) with MSG_NOSIGNAL
 * is used for sockets; if the fd turns out not to be a socket we fall back
 * to write(2), which is what tests with pipes need.
 */
static BwIoResult
plain_write(BwTransport *t, const void *buf, size_t len, size_t *nwritten)
{
	*nwritten = 0;
	for (;;)
	{
		ssize_t		n = send(t->fd, buf, len, MSG_NOSIGNAL);

		if (n < 0 && errno == ENOTSOCK)
			n = write(t->fd, buf, len);
		if (n > 0)
		{
			*nwritten = (size_t) n;
			return BW_IO_OK;
		}
		if (n == 0)
			return BW_IO_WANT_WRITE;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return BW_IO_WANT_WRITE;
		return BW_IO_ERROR;
	}
}

/*
 * Half-close: send FIN but keep the receiving side open so the connection
 * layer can drain what the client is still sending.
 */
static BwIoResult
plain_shutdown(BwTransport *t)
{
	if (shutdown(t->fd, SHUT_WR) == 0 || errno == ENOTCONN ||
		errno == ENOTSOCK)
		return BW_IO_OK;
	return BW_IO_ERROR;
}

/*
 * Close the fd and free the transport.
 */
static void
plain_close(BwTransport *t)
{
	if (t->fd >= 0)
		close(t->fd);
	free(t);
}

/*
 * Create a plain transport that owns fd (closed by ops->close).  The fd
 * must already be non-blocking.  Returns NULL when out of memory, in which
 * case fd is left open for the caller.
 */
BwTransport *
bw_transport_plain_new(int fd)
{
	BwTransport *t = calloc(1, sizeof(BwTransport));

	if (t == NULL)
		return NULL;
	t->ops = &plain_ops;
	t->fd = fd;
	t->handshake_done = true;
	t->priv = NULL;
	return t;
}

/*
 * Set O_NONBLOCK on fd.
 */
bool
bw_fd_set_nonblocking(int fd)
{
	int			flags = fcntl(fd, F_GETFL, 0);

	if (flags < 0)
		return false;
	if ((flags & O_NONBLOCK) != 0)
		return true;
	return fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

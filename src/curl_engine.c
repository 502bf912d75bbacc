/*-------------------------------------------------------------------------
 *
 * curl_engine.c
 *	  One libcurl multi handle driven through curl_multi_socket_action,
 *	  with its sockets in a private epoll fd.
 *
 * See curl_engine.h for how a worker drives it.  Easy handles are pooled
 * and reset between calls; connections outlive them in the multi handle's
 * connection cache, so keep-alive works across calls.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "curl_engine.h"

#define MAX_EPOLL_EVENTS	64
#define MAX_POOLED_EASY		64

struct BwCurlEngine
{
	CURLM	   *multi;
	int			epfd;
	int64_t		timer_at_ms;	/* -1: no timer */
	int			running;
	BwHttpCall *active;			/* calls in flight */
	BwHttpCall *done_head;
	BwHttpCall *done_tail;
	CURL	   *pool[MAX_POOLED_EASY];
	int			npool;
	char	   *ca_file;
	char	   *user_agent;
};

static bool global_done = false;

static void detach(BwCurlEngine *e, BwHttpCall *call);

static int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Block every signal around a call into libcurl: a resolver thread that
 * libcurl starts inherits the mask, so the server's signal handlers only
 * ever run on the main thread.  Signals that arrive meanwhile are delivered
 * when the mask is restored.
 */
static void
block_signals(sigset_t *old)
{
	sigset_t	all;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, old);
}

static void
restore_signals(const sigset_t *old)
{
	pthread_sigmask(SIG_SETMASK, old, NULL);
}

/* CURLMOPT_SOCKETFUNCTION: keep the private epoll set in step. */
static int
socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	BwCurlEngine *e = userp;
	struct epoll_event ev;

	if (what == CURL_POLL_REMOVE)
	{
		epoll_ctl(e->epfd, EPOLL_CTL_DEL, s, NULL);
		curl_multi_assign(e->multi, s, NULL);
		return 0;
	}
	memset(&ev, 0, sizeof(ev));
	ev.data.fd = s;
	if (what & CURL_POLL_IN)
		ev.events |= EPOLLIN;
	if (what & CURL_POLL_OUT)
		ev.events |= EPOLLOUT;
	if (socketp == NULL)
	{
		if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, s, &ev) != 0 && errno == EEXIST)
			epoll_ctl(e->epfd, EPOLL_CTL_MOD, s, &ev);
		curl_multi_assign(e->multi, s, e);
	}
	else if (epoll_ctl(e->epfd, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT)
		epoll_ctl(e->epfd, EPOLL_CTL_ADD, s, &ev);
	return 0;
}

/* CURLMOPT_TIMERFUNCTION: remember when libcurl wants to be called. */
static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	BwCurlEngine *e = userp;

	e->timer_at_ms = timeout_ms < 0 ? -1 : mono_ms() + timeout_ms;
	return 0;
}

/* CURLOPT_WRITEFUNCTION: keep the body up to its bound, drop the rest. */
static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	BwHttpCall *call = userdata;
	size_t		n = size * nmemb;
	size_t		room;

	if (call->resp_body == NULL && call->max_response_body > 0)
	{
		call->resp_body = malloc(call->max_response_body + 1);
		if (call->resp_body == NULL)
			return n;
		call->resp_body[0] = '\0';
	}
	room = call->max_response_body - call->resp_body_len;
	if (n > room)
		call->resp_body_truncated = true;
	if (room > 0 && call->resp_body != NULL)
	{
		size_t		k = n < room ? n : room;

		memcpy(call->resp_body + call->resp_body_len, ptr, k);
		call->resp_body_len += k;
		call->resp_body[call->resp_body_len] = '\0';
	}
	return n;
}

/*
 * CURLOPT_HEADERFUNCTION: keep the final response's header lines up to a
 * bound, and pick out Retry-After.  A new status line (an interim 1xx was
 * received first) starts over.
 */
static size_t
header_cb(char *buffer, size_t size, size_t nitems, void *userdata)
{
	BwHttpCall *call = userdata;
	size_t		n = size * nitems;

	if (n >= 5 && strncmp(buffer, "HTTP/", 5) == 0)
	{
		call->resp_headers_len = 0;
		if (call->resp_headers != NULL)
			call->resp_headers[0] = '\0';
		call->retry_after[0] = '\0';
		return n;
	}
	if (n > 12 && strncasecmp(buffer, "retry-after:", 12) == 0)
	{
		size_t		len = n - 12;
		const char *v = buffer + 12;

		while (len > 0 && (*v == ' ' || *v == '\t'))
			v++, len--;
		while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == '\n' ||
						   v[len - 1] == ' '))
			len--;
		if (len >= sizeof(call->retry_after))
			len = sizeof(call->retry_after) - 1;

		/*
		 * Kept for the error text of the attempt: printable ASCII only
		 * (what the header's two forms are made of), so that a hostile
		 * receiver cannot put invalid text into a table.
		 */
		for (size_t i = 0; i < len; i++)
			call->retry_after[i] = (v[i] >= 0x20 && v[i] < 0x7f) ? v[i] : '?';
		call->retry_after[len] = '\0';
	}
	if (call->max_response_headers > 0)
	{
		size_t		room;

		if (call->resp_headers == NULL)
		{
			call->resp_headers = malloc(call->max_response_headers + 1);
			if (call->resp_headers == NULL)
				return n;
			call->resp_headers[0] = '\0';
		}
		room = call->max_response_headers - call->resp_headers_len;
		if (room > 0)
		{
			size_t		k = n < room ? n : room;

			memcpy(call->resp_headers + call->resp_headers_len, buffer, k);
			call->resp_headers_len += k;
			call->resp_headers[call->resp_headers_len] = '\0';
		}
	}
	return n;
}

BwCurlEngine *
bw_curl_engine_new(const BwCurlEngineOptions *opts, char *err, size_t errsize)
{
	BwCurlEngine *e;
	sigset_t	old;

	if (!global_done)
	{
		/* once per process, before any thread exists */
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		{
			snprintf(err, errsize, "curl_global_init failed");
			return NULL;
		}
		global_done = true;
	}
	e = calloc(1, sizeof(BwCurlEngine));
	if (e == NULL)
	{
		snprintf(err, errsize, "out of memory");
		return NULL;
	}
	e->timer_at_ms = -1;
	e->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (e->epfd < 0)
	{
		snprintf(err, errsize, "could not create an epoll instance: %s", strerror(errno));
		free(e);
		return NULL;
	}
	block_signals(&old);
	e->multi = curl_multi_init();
	restore_signals(&old);
	if (e->multi == NULL)
	{
		snprintf(err, errsize, "curl_multi_init failed");
		close(e->epfd);
		free(e);
		return NULL;
	}
	curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e);
	curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, e);
	if (opts->max_total_connections > 0)
	{
		curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, opts->max_total_connections);
		curl_multi_setopt(e->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
						  opts->max_total_connections);
	}
	if (opts->max_host_connections > 0)
		curl_multi_setopt(e->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
						  opts->max_host_connections);
	if (opts->ca_file != NULL && opts->ca_file[0] != '\0')
		e->ca_file = strdup(opts->ca_file);
	e->user_agent = strdup(opts->user_agent ? opts->user_agent : "biteship_webhook");
	return e;
}

/* Return an easy handle to the pool, or clean it up. */
static void
release_easy(BwCurlEngine *e, CURL *easy)
{
	if (e->npool < MAX_POOLED_EASY)
	{
		curl_easy_reset(easy);
		e->pool[e->npool++] = easy;
	}
	else
		curl_easy_cleanup(easy);
}

void
bw_curl_engine_free(BwCurlEngine *e)
{
	sigset_t	old;

	if (e == NULL)
		return;
	block_signals(&old);
	/* calls still in flight: detach them */
	while (e->active != NULL)
		detach(e, e->active);
	for (int i = 0; i < e->npool; i++)
		curl_easy_cleanup(e->pool[i]);
	curl_multi_cleanup(e->multi);
	restore_signals(&old);
	close(e->epfd);
	free(e->ca_file);
	free(e->user_agent);
	free(e);
}

int
bw_curl_engine_fd(const BwCurlEngine *e)
{
	return e->epfd;
}

long
bw_curl_engine_timeout(const BwCurlEngine *e)
{
	int64_t		now;

	if (e->timer_at_ms < 0)
		return -1;
	now = mono_ms();
	return e->timer_at_ms <= now ? 0 : (long) (e->timer_at_ms - now);
}

int
bw_curl_engine_running(const BwCurlEngine *e)
{
	return e->running;
}

/* Fail a call that could not be started. */
static bool
fail_start(BwHttpCall *call, const char *msg)
{
	call->done = true;
	call->status = 0;
	call->terr = BW_TRANSPORT_FATAL;
	snprintf(call->error, sizeof(call->error), "%s", msg);
	return false;
}

bool
bw_curl_engine_start(BwCurlEngine *e, BwHttpCall *call)
{
	CURL	   *easy;
	struct curl_slist *slist = NULL;
	sigset_t	old;
	CURLMcode	mc;

	call->done = false;
	call->status = 0;
	call->terr = BW_TRANSPORT_OK;
	call->error[0] = '\0';
	call->retry_after[0] = '\0';
	call->resp_headers_len = 0;
	call->resp_body_len = 0;
	call->resp_body_truncated = false;
	call->next_done = NULL;

	block_signals(&old);
	easy = e->npool > 0 ? e->pool[--e->npool] : curl_easy_init();
	if (easy == NULL)
	{
		restore_signals(&old);
		return fail_start(call, "out of memory");
	}

	for (int i = 0; i < call->nheaders; i++)
	{
		struct curl_slist *s = curl_slist_append(slist, call->headers[i]);

		if (s == NULL)
		{
			curl_slist_free_all(slist);
			release_easy(e, easy);
			restore_signals(&old);
			return fail_start(call, "out of memory");
		}
		slist = s;
	}
	/* no "Expect: 100-continue" round trip for larger bodies */
	slist = curl_slist_append(slist, "Expect:");

	curl_easy_setopt(easy, CURLOPT_URL, call->url);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, call->method);
	if (strcmp(call->method, "GET") == 0)
		curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
	else
	{
		curl_easy_setopt(easy, CURLOPT_POST, 1L);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) call->body_len);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDS, call->body_len > 0 ? call->body : "");
	}
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, slist);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, e->user_agent);
	if (call->timeout_ms > 0)
		curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, call->timeout_ms);
	if (call->connect_timeout_ms > 0)
		curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, call->connect_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
	if (e->ca_file != NULL)
		curl_easy_setopt(easy, CURLOPT_CAINFO, e->ca_file);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, call);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, call);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, call->error);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, (char *) call);

	call->easy = easy;
	call->slist = slist;
	mc = curl_multi_add_handle(e->multi, easy);
	restore_signals(&old);
	if (mc != CURLM_OK)
	{
		curl_slist_free_all(slist);
		call->slist = NULL;
		call->easy = NULL;
		release_easy(e, easy);
		return fail_start(call, curl_multi_strerror(mc));
	}
	e->running++;
	call->active_prev = NULL;
	call->active_next = e->active;
	if (e->active != NULL)
		e->active->active_prev = call;
	e->active = call;
	return true;
}

/* Detach a finished or aborted call's handle. */
static void
detach(BwCurlEngine *e, BwHttpCall *call)
{
	CURL	   *easy = call->easy;

	curl_multi_remove_handle(e->multi, easy);
	curl_slist_free_all(call->slist);
	call->slist = NULL;
	call->easy = NULL;
	release_easy(e, easy);
	e->running--;
	if (call->active_prev != NULL)
		call->active_prev->active_next = call->active_next;
	else
		e->active = call->active_next;
	if (call->active_next != NULL)
		call->active_next->active_prev = call->active_prev;
	call->active_prev = call->active_next = NULL;
}

void
bw_curl_engine_abort(BwCurlEngine *e, BwHttpCall *call)
{
	sigset_t	old;

	if (call->easy == NULL)
		return;
	block_signals(&old);
	detach(e, call);
	restore_signals(&old);
}

/* The result of a finished transfer. */
static void
finish(BwCurlEngine *e, CURL *easy, CURLcode rc)
{
	BwHttpCall *call = NULL;
	long		status = 0;
	double		total = 0;

	curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &call);
	if (call == NULL)
		return;
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME, &total);
	call->total_seconds = total;
	if (rc == CURLE_OK)
	{
		call->status = status;
		call->terr = BW_TRANSPORT_OK;
		call->error[0] = '\0';
	}
	else
	{
		call->status = 0;
		call->terr = (rc == CURLE_UNSUPPORTED_PROTOCOL ||
					  rc == CURLE_URL_MALFORMAT) ?
			BW_TRANSPORT_FATAL : BW_TRANSPORT_RETRYABLE;
		if (call->error[0] == '\0')
			snprintf(call->error, sizeof(call->error), "%s", curl_easy_strerror(rc));
	}
	detach(e, call);
	call->done = true;
	call->next_done = NULL;
	if (e->done_tail != NULL)
		e->done_tail->next_done = call;
	else
		e->done_head = call;
	e->done_tail = call;
}

void
bw_curl_engine_run(BwCurlEngine *e)
{
	struct epoll_event evs[MAX_EPOLL_EVENTS];
	int			n;
	int			still;
	sigset_t	old;
	CURLMsg    *msg;
	int			left;

	block_signals(&old);
	n = epoll_wait(e->epfd, evs, MAX_EPOLL_EVENTS, 0);
	for (int i = 0; i < n; i++)
	{
		int			flags = 0;

		if (evs[i].events & EPOLLIN)
			flags |= CURL_CSELECT_IN;
		if (evs[i].events & EPOLLOUT)
			flags |= CURL_CSELECT_OUT;
		if (evs[i].events & (EPOLLERR | EPOLLHUP))
			flags |= CURL_CSELECT_ERR;
		curl_multi_socket_action(e->multi, evs[i].data.fd, flags, &still);
	}
	if (e->timer_at_ms >= 0 && mono_ms() >= e->timer_at_ms)
	{
		e->timer_at_ms = -1;
		curl_multi_socket_action(e->multi, CURL_SOCKET_TIMEOUT, 0, &still);
	}
	while ((msg = curl_multi_info_read(e->multi, &left)) != NULL)
	{
		if (msg->msg == CURLMSG_DONE)
			finish(e, msg->easy_handle, msg->data.result);
	}
	restore_signals(&old);
}

BwHttpCall *
bw_curl_engine_next_done(BwCurlEngine *e)
{
	BwHttpCall *call = e->done_head;

	if (call == NULL)
		return NULL;
	e->done_head = call->next_done;
	if (e->done_head == NULL)
		e->done_tail = NULL;
	call->next_done = NULL;
	return call;
}

void
bw_http_call_release(BwHttpCall *call)
{
	free(call->resp_headers);
	free(call->resp_body);
	call->resp_headers = NULL;
	call->resp_body = NULL;
	call->resp_headers_len = 0;
	call->resp_body_len = 0;
}

bool
bw_url_check(const char *url, char *err, size_t errsize)
{
	CURLU	   *u = curl_url();
	CURLUcode	rc;
	char	   *part = NULL;
	bool		ok = false;

	if (u == NULL)
	{
		snprintf(err, errsize, "out of memory");
		return false;
	}
	if (strlen(url) > 2048)
	{
		snprintf(err, errsize, "the URL is longer than 2048 bytes");
		goto done;
	}
	for (const unsigned char *p = (const unsigned char *) url; *p; p++)
	{
		if (*p <= 0x20 || *p == 0x7f)
		{
			snprintf(err, errsize, "the URL has a space or a control character");
			goto done;
		}
	}
	{
		const char *sep = strstr(url, "://");

		if (sep == NULL || sep[3] == '/' || sep[3] == '\0')
		{
			snprintf(err, errsize, "the URL has no host");
			goto done;
		}
	}
	rc = curl_url_set(u, CURLUPART_URL, url, 0);
	if (rc != CURLUE_OK)
	{
		snprintf(err, errsize, "%s", curl_url_strerror(rc));
		goto done;
	}
	if (curl_url_get(u, CURLUPART_SCHEME, &part, 0) != CURLUE_OK ||
		(strcasecmp(part, "http") != 0 && strcasecmp(part, "https") != 0))
	{
		snprintf(err, errsize, "only http and https URLs are allowed");
		goto done;
	}
	curl_free(part);
	part = NULL;
	if (curl_url_get(u, CURLUPART_HOST, &part, 0) != CURLUE_OK || part[0] == '\0')
	{
		snprintf(err, errsize, "the URL has no host");
		goto done;
	}
	curl_free(part);
	part = NULL;
	if (curl_url_get(u, CURLUPART_USER, &part, 0) == CURLUE_OK ||
		curl_url_get(u, CURLUPART_PASSWORD, &part, 0) == CURLUE_OK)
	{
		snprintf(err, errsize, "the URL carries a user name or password");
		goto done;
	}
	if (curl_url_get(u, CURLUPART_FRAGMENT, &part, 0) == CURLUE_OK)
	{
		snprintf(err, errsize, "the URL has a fragment");
		goto done;
	}
	ok = true;
done:
	if (part != NULL)
		curl_free(part);
	curl_url_cleanup(u);
	return ok;
}

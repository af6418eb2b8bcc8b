/* nftgen.c: the nftables ruleset generation, for netplug_port_filtered().
 *
 * Verifying a port's filter by listing the table through libnftables costs
 * milliseconds (it builds the whole ruleset cache), far too much for every
 * metadata connection on the agent's loop. The kernel numbers every change of
 * the ruleset, anyone's, with one generation id (NFT_MSG_GETGEN, a single
 * small netlink answer): a port verified at generation G is still filtered
 * while the generation is G, since nothing in the ruleset has changed since.
 * So the listing runs only after a change (a plug, a flush, someone's
 * firewall reload), and a lookup otherwise costs one netlink round trip.
 * The socket is opened with the handle, in its namespace, with a receive
 * timeout; it is used under np->lock. */
#include <errno.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net-plug/netplug-internal.h"

int np_gen_open(struct netplug *np)
{
    int fd = np_nl_open(NETLINK_NETFILTER);

    if (fd < 0)
        return fd;
    np->gen_fd = fd;
    return 0;
}

/* Parses one answer: 1 with *gen when it is the NEWGEN answer to seq, 0 when it
 * is not ours, -errno. Pure: the fuzz and unit tests call it. */
int np_gen_parse(const void *buf, size_t len, uint32_t seq, uint32_t *gen)
{
    for (const struct nlmsghdr *h = buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
        if (h->nlmsg_seq != seq)
            continue;
        if (h->nlmsg_type == NLMSG_ERROR) {
            const struct nlmsgerr *e = NLMSG_DATA(h);
            if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
                return -EIO;
            return e->error ? e->error : -EIO;
        }
        if (h->nlmsg_type != ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN) ||
            h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nfgenmsg)))
            continue;
        size_t off = NLMSG_ALIGN(sizeof(struct nfgenmsg));
        size_t alen = h->nlmsg_len - NLMSG_LENGTH(0);
        const char *p = NLMSG_DATA(h);
        while (off + NLA_HDRLEN <= alen) {
            const struct nlattr *a = (const struct nlattr *)(p + off);
            if (a->nla_len < NLA_HDRLEN || off + a->nla_len > alen)
                return -EIO;
            if ((a->nla_type & NLA_TYPE_MASK) == NFTA_GEN_ID && a->nla_len >= NLA_HDRLEN + 4) {
                uint32_t be;
                memcpy(&be, p + off + NLA_HDRLEN, 4);
                *gen = ntohl(be);
                return 1;
            }
            off += NLA_ALIGN(a->nla_len);
        }
        return -EIO;
    }
    return 0;
}

int np_gen_get(struct netplug *np, uint32_t *gen)
{
    struct {
        struct nlmsghdr h;
        struct nfgenmsg g;
    } q;
    char buf[512] __attribute__((aligned(NLMSG_ALIGNTO)));
    struct sockaddr_nl to = {.nl_family = AF_NETLINK};

    if (np->gen_fd < 0)
        return -EBADF;
    memset(&q, 0, sizeof(q));
    q.h.nlmsg_len = NLMSG_LENGTH(sizeof(q.g));
    q.h.nlmsg_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN;
    q.h.nlmsg_flags = NLM_F_REQUEST;
    q.h.nlmsg_seq = ++np->gen_seq;
    q.g.nfgen_family = AF_UNSPEC;
    q.g.version = NFNETLINK_V0;
    if (sendto(np->gen_fd, &q, q.h.nlmsg_len, 0, (struct sockaddr *)&to, sizeof(to)) < 0)
        return errno == EAGAIN ? -ETIMEDOUT : -errno;
    for (;;) {
        ssize_t n = recv(np->gen_fd, buf, sizeof(buf), 0);
        int r;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
        }
        if ((r = np_gen_parse(buf, (size_t)n, q.h.nlmsg_seq, gen)) != 0)
            return r < 0 ? r : 0;
        /* a late answer to an earlier request that timed out: read on */
    }
}

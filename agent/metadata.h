/* metadata.h: STUB (helper C). A copy of the interface in the issue-10
 * contract so the agent builds before helper B's metadata service lands; the
 * lead drops this file (and agent/metadata/stub.c) for B's at merge.
 *
 * The node's metadata service (EC2 and OpenStack), the config drive. */
#ifndef CA_AGENT_METADATA_H
#define CA_AGENT_METADATA_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "common/util.h"

struct md_key { char *name; char *type; char *data; };       /* type "ssh" */
struct md_kv  { char *key; char *value; };
struct md_iface {
    char mac[18]; char ipv4[16]; int prefix; char gateway[16];  /* "" none */
    char **dns; size_t n_dns; int mtu; char network[64]; char port_id[37];
    int device_number;                                            /* 0.. in launch order */
};
enum md_tokens { MD_TOKENS_OPTIONAL, MD_TOKENS_REQUIRED };
struct md_instance {              /* all owned; md_instance_free() */
    char uuid[37]; char ec2_id[20];
    char *name, *hostname, *availability_zone, *instance_type, *image_id, *project_id, *arch;
    int launch_index; int64_t created_ms;
    struct md_key *keys; size_t n_keys;
    struct md_kv *meta; size_t n_meta;
    uint8_t *user_data; size_t user_data_len; bool has_user_data;
    struct md_iface *ifaces; size_t n_ifaces;
    enum md_tokens http_tokens; int hop_limit /* 1..64 */; bool endpoint_enabled;
};
void md_instance_free(struct md_instance *m);
struct md_instance *md_instance_ref(struct md_instance *m);

struct md_answer { int status; const char *content_type; char *body; size_t len; };
int  md_render(const struct md_instance *m, const char *path, struct md_answer *out);
void md_answer_release(struct md_answer *a);

enum md_drive_kind { MD_DRIVE_CONFIG2, MD_DRIVE_NOCLOUD };
int  md_drive_build(const struct md_instance *m, enum md_drive_kind kind, const char *iso_path,
                    const char *xorriso, struct agent_error *err);

struct md_service;
typedef int (*md_lookup_fn)(void *opaque, const char *network, const struct sockaddr_in *peer,
                            struct md_instance **out /* a reference the caller drops */);
struct md_service_config { double rate; int burst;
                           const uint8_t *token_key; size_t token_key_len; };
int  md_service_new(uv_loop_t *loop, const struct md_service_config *cfg, md_lookup_fn lookup,
                    void *opaque, struct md_service **out);
int  md_service_listen(struct md_service *s, const char *network, const char *bind_dev,
                       const char *addr, int port);
int  md_service_unlisten(struct md_service *s, const char *network);
/* STUB note: the contract names a struct prom_buf; common/prom.h writes to a
 * FILE, so this copy takes one. */
int  md_service_metrics(struct md_service *s, FILE *out);
void md_service_free(struct md_service *s);

#endif

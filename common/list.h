/* list.h: an intrusive, circular, doubly linked list (the Linux kernel's and
 * libuv's queue model). An element embeds a struct list_node and is found back
 * from it with list_entry(); a list is a struct list_node head that is its own
 * neighbour when empty. Nothing here allocates or frees: the list owns no
 * element, whoever links an element unlinks it before freeing it.
 *
 * A head must be list_init()ed before use. An element's node may be zeroed
 * (calloc) or list_init()ed before it is first linked: list_del() and
 * list_linked() accept both, and list_del() leaves the node unlinked (pointing
 * at itself), so deleting twice is harmless.
 *
 * Loop thread or caller's lock: the list does no locking. */
#ifndef CA_COMMON_LIST_H
#define CA_COMMON_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct list_node {
    struct list_node *prev, *next;
};

/* A head (or an element's node) that is an empty list. */
static inline void list_init(struct list_node *n)
{
    n->prev = n->next = n;
}

static inline bool list_empty(const struct list_node *head)
{
    return head->next == head;
}

/* n is on some list (false for a zeroed or list_init()ed node). */
static inline bool list_linked(const struct list_node *n)
{
    return n->next && n->next != n;
}

static inline void list_insert_between(struct list_node *n, struct list_node *prev,
                                       struct list_node *next)
{
    n->prev = prev;
    n->next = next;
    prev->next = n;
    next->prev = n;
}

/* Link n last (tail) or first (head). n must not be on a list. */
static inline void list_add_tail(struct list_node *head, struct list_node *n)
{
    list_insert_between(n, head->prev, head);
}

static inline void list_add_head(struct list_node *head, struct list_node *n)
{
    list_insert_between(n, head, head->next);
}

/* Unlink n from its list, if it is on one; n is left unlinked. */
static inline void list_del(struct list_node *n)
{
    if (list_linked(n)) {
        n->prev->next = n->next;
        n->next->prev = n->prev;
    }
    list_init(n);
}

/* Move every element of from to the end of to, in order; from is left empty. */
static inline void list_splice_tail(struct list_node *to, struct list_node *from)
{
    if (list_empty(from))
        return;
    from->next->prev = to->prev;
    to->prev->next = from->next;
    from->prev->next = to;
    to->prev = from->prev;
    list_init(from);
}

/* The element holding node ptr as its member. */
#define list_entry(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

/* The first element, or NULL when the list is empty. */
#define list_first_entry_or_null(head, type, member)                           \
    (list_empty(head) ? NULL : list_entry((head)->next, type, member))

/* Every element, first to last; pos must stay linked during the body. */
#define list_for_each_entry(pos, head, member)                                 \
    for (pos = list_entry((head)->next, __typeof__(*pos), member);             \
         &pos->member != (head);                                               \
         pos = list_entry(pos->member.next, __typeof__(*pos), member))

/* The same, where the body may unlink (and free) pos: tmp holds the next. */
#define list_for_each_entry_safe(pos, tmp, head, member)                       \
    for (pos = list_entry((head)->next, __typeof__(*pos), member),             \
        tmp = list_entry(pos->member.next, __typeof__(*pos), member);          \
         &pos->member != (head);                                               \
         pos = tmp, tmp = list_entry(tmp->member.next, __typeof__(*tmp), member))

#endif

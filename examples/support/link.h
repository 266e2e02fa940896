/* A tiny intrusive doubly-linked list for the HTTP example code
 * (llm_client.c and llm_guarded.c). Examples use only libwflo's public API,
 * so they cannot borrow the library's private src/internal/list.h. */
#ifndef WFLO_EXAMPLE_LINK_H
#define WFLO_EXAMPLE_LINK_H

typedef struct link {
  struct link *prev, *next;
} link_t;

static inline void list_init(link_t *h) { h->prev = h->next = h; }
static inline int list_empty(const link_t *h) { return h->next == h; }
static inline void list_push(link_t *h, link_t *n) {
  n->prev = h->prev;
  n->next = h;
  h->prev->next = n;
  h->prev = n;
}
static inline void list_del(link_t *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->prev = n->next = n;
}

#endif /* WFLO_EXAMPLE_LINK_H */

/* Intrusive circular doubly-linked list (waiter queues, registries, loop
 * queues). Type-safe static inline functions; use wflo__container_of() to
 * get from a node to its struct. An unlinked node points to itself. */
#ifndef WFLO_INTERNAL_LIST_H
#define WFLO_INTERNAL_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct wflo__list {
  struct wflo__list *next;
  struct wflo__list *prev;
} wflo__list_t;

static inline void wflo__list_init(wflo__list_t *l) { l->next = l->prev = l; }

static inline bool wflo__list_empty(const wflo__list_t *l) {
  return l->next == l;
}

/* Insert n before `at` (at the tail when `at` is the head). */
static inline void wflo__list_insert_tail(wflo__list_t *head,
                                          wflo__list_t *n) {
  n->next = head;
  n->prev = head->prev;
  head->prev->next = n;
  head->prev = n;
}

static inline void wflo__list_insert_head(wflo__list_t *head,
                                          wflo__list_t *n) {
  n->prev = head;
  n->next = head->next;
  head->next->prev = n;
  head->next = n;
}

/* Unlinks n and makes it point to itself, so a second remove is harmless. */
static inline void wflo__list_remove(wflo__list_t *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->next = n->prev = n;
}

static inline bool wflo__list_linked(const wflo__list_t *n) {
  return n->next != n;
}

static inline wflo__list_t *wflo__list_first(const wflo__list_t *head) {
  return head->next == head ? NULL : head->next;
}

/* Moves every node of `from` to the tail of `to`; `from` becomes empty. */
static inline void wflo__list_splice(wflo__list_t *to, wflo__list_t *from) {
  if (wflo__list_empty(from))
    return;
  from->next->prev = to->prev;
  to->prev->next = from->next;
  from->prev->next = to;
  to->prev = from->prev;
  wflo__list_init(from);
}

#define wflo__list_foreach(it, head)                                          \
  for ((it) = (head)->next; (it) != (head); (it) = (it)->next)

#endif /* WFLO_INTERNAL_LIST_H */

/**
 * A stand-in ChannelManager and ChainMonitor exposing only what LdkEventLoop calls, each with its
 * own event queue, behaving like LDK where the loop depends on it: an event handed back
 * (ReplayEvent) stays at the head of its queue with those after it, and LDK then asks for
 * persistence.
 */
import * as ldk from 'lightningdevkit';

export function fakeLdkNode() {
  const state = {
    needsPersistence: false,
    pending: [] as ldk.Event[],
    chainPending: [] as ldk.Event[],
    /** Managers serialized so far (`write()` calls). */
    serialized: 0,
    /** For events queued with `queueEvent`: how many managers had been serialized before (by tag). */
    serializedBefore: new Map<bigint, number>(),
  };
  const provider = (queue: ldk.Event[]) => ({
    process_pending_events(handler: ldk.EventHandler) {
      while (queue.length > 0) {
        if (!handler.handle_event(queue[0]).is_ok()) {
          state.needsPersistence = true;
          return;
        }
        queue.shift();
      }
    },
  });
  const channelManager = {
    get_and_clear_needs_persistence: () => {
      const v = state.needsPersistence;
      state.needsPersistence = false;
      return v;
    },
    write: () => Uint8Array.of(++state.serialized),
    as_EventsProvider: () => provider(state.pending),
    get_event_or_persistence_needed_future: () => ({ register_callback_fn: () => {} }),
  } as unknown as ldk.ChannelManager;
  const chainMonitor = {
    as_EventsProvider: () => provider(state.chainPending),
    get_update_future: () => ({ register_callback_fn: () => {} }),
  } as unknown as ldk.ChainMonitor;
  /** LDK queues an event tagged `tag` (and asks for persistence); `chain` puts it in the ChainMonitor's queue. */
  const queueEvent = (tag: bigint, chain = false): void => {
    (chain ? state.chainPending : state.pending).push(ldk.Event.constructor_pending_htlcs_forwardable(tag));
    state.serializedBefore.set(tag, state.serialized);
    state.needsPersistence = true;
  };
  return { state, channelManager, chainMonitor, queueEvent };
}

/** The tag `queueEvent` gave an event. */
export const tagOf = (event: ldk.Event): bigint => (event as ldk.Event_PendingHTLCsForwardable).time_forwardable;

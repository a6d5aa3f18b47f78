/**
 * Writing the ChannelManager, NetworkGraph and scorer in LDK's layout, and reading the
 * graph and scorer back. Objects are serialized synchronously at call time (the snapshot
 * LDK asked to persist), then written asynchronously.
 */
import * as ldk from 'lightningdevkit';
import type { AsyncKVStore } from '../store/types.js';
import { KeyNotFoundError } from '../store/errors.js';
import { CorruptStateError } from './errors.js';
import { CHANNEL_MANAGER_NAMESPACE, NETWORK_GRAPH_NAMESPACE, SCORER_NAMESPACE } from './layout.js';

/** Writes the ChannelManager to `("", "", "manager")`; resolves when durable. Returns the byte count. */
export async function persistManager(channelManager: ldk.ChannelManager, store: AsyncKVStore): Promise<number> {
  const bytes = channelManager.write();
  await writeManagerBytes(bytes, store);
  return bytes.length;
}

/** Writes already-serialized ChannelManager bytes (a snapshot taken when LDK asked). */
export function writeManagerBytes(bytes: Uint8Array, store: AsyncKVStore): Promise<void> {
  return store.write(CHANNEL_MANAGER_NAMESPACE.primary, CHANNEL_MANAGER_NAMESPACE.secondary, CHANNEL_MANAGER_NAMESPACE.key, bytes);
}

/** Writes the NetworkGraph to `("", "", "network_graph")`. */
export async function persistNetworkGraph(graph: ldk.NetworkGraph, store: AsyncKVStore): Promise<number> {
  const bytes = graph.write();
  await store.write(NETWORK_GRAPH_NAMESPACE.primary, NETWORK_GRAPH_NAMESPACE.secondary, NETWORK_GRAPH_NAMESPACE.key, bytes);
  return bytes.length;
}

/** Writes a ProbabilisticScorer to `("", "", "scorer")`. */
export async function persistScorer(scorer: ldk.ProbabilisticScorer, store: AsyncKVStore): Promise<number> {
  const bytes = scorer.write();
  await store.write(SCORER_NAMESPACE.primary, SCORER_NAMESPACE.secondary, SCORER_NAMESPACE.key, bytes);
  return bytes.length;
}

async function readOptional(store: AsyncKVStore, where: { primary: string; secondary: string; key: string }): Promise<Uint8Array | undefined> {
  try {
    return await store.read(where.primary, where.secondary, where.key);
  } catch (err) {
    if (err instanceof KeyNotFoundError) return undefined;
    throw err;
  }
}

/** The stored ChannelManager bytes, or undefined if the store has none. Other errors propagate. */
export function readManagerBytes(store: AsyncKVStore): Promise<Uint8Array | undefined> {
  return readOptional(store, CHANNEL_MANAGER_NAMESPACE);
}

/**
 * The stored NetworkGraph, or a fresh one for `network` if the store has none. A graph that
 * exists but does not decode is an error (a graph is rebuildable, but silently replacing
 * it would hide a broken store).
 */
export async function readNetworkGraph(store: AsyncKVStore, network: ldk.Network, logger: ldk.Logger): Promise<ldk.NetworkGraph> {
  const bytes = await readOptional(store, NETWORK_GRAPH_NAMESPACE);
  if (!bytes) return ldk.NetworkGraph.constructor_new(network, logger);
  const res = ldk.NetworkGraph.constructor_read(bytes, logger);
  if (!(res instanceof ldk.Result_NetworkGraphDecodeErrorZ_OK)) {
    throw new CorruptStateError('stored network graph does not decode', NETWORK_GRAPH_NAMESPACE.primary, NETWORK_GRAPH_NAMESPACE.secondary, NETWORK_GRAPH_NAMESPACE.key);
  }
  return res.res;
}

/** The stored ProbabilisticScorer, or a fresh one if the store has none. */
export async function readScorer(
  store: AsyncKVStore,
  graph: ldk.NetworkGraph,
  logger: ldk.Logger,
  decay: ldk.ProbabilisticScoringDecayParameters = ldk.ProbabilisticScoringDecayParameters.constructor_default(),
): Promise<ldk.ProbabilisticScorer> {
  const bytes = await readOptional(store, SCORER_NAMESPACE);
  if (!bytes) return ldk.ProbabilisticScorer.constructor_new(decay, graph, logger);
  const res = ldk.ProbabilisticScorer.constructor_read(bytes, decay, graph, logger);
  if (!(res instanceof ldk.Result_ProbabilisticScorerDecodeErrorZ_OK)) {
    throw new CorruptStateError('stored scorer does not decode', SCORER_NAMESPACE.primary, SCORER_NAMESPACE.secondary, SCORER_NAMESPACE.key);
  }
  return res.res;
}

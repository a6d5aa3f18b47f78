/**
 * The four VSS operations on decoded protobuf messages: request validation, the reference's
 * paging rules, and conversion between wire messages and backend values. No HTTP here.
 */
import {
  GLOBAL_VERSION_KEY,
  bigIntToInt64,
  countTopLevelFields,
  hasField,
  int64ToBigInt,
  keyValueSizeBound,
  presizedWriter,
  strictReader,
  vss,
  type VssOperation,
} from '../protocol/index.js';
import type { DeleteItem, PutItem, StorageBackend } from './backends/types.js';
import { InvalidRequestError, NoSuchKeyError } from './errors.js';
import { LIST_MAX_PAGE_SIZE, MAX_KEY_LENGTH, MAX_PUT_ITEM_COUNT, MAX_STORE_ID_LENGTH, fitsLength } from './limits.js';
import { decodePageToken, encodePageToken } from './page-token.js';

const EMPTY = new Uint8Array(0);

function checkStoreId(storeId: string): void {
  if (!fitsLength(storeId, MAX_STORE_ID_LENGTH)) {
    throw new InvalidRequestError(`store_id must be at most ${MAX_STORE_ID_LENGTH} characters`);
  }
  if (storeId.includes('\0')) throw new InvalidRequestError('store_id must not contain NUL characters');
}

function checkKey(key: string): void {
  if (!fitsLength(key, MAX_KEY_LENGTH)) throw new InvalidRequestError(`key must be at most ${MAX_KEY_LENGTH} characters`);
  if (key.includes('\0')) throw new InvalidRequestError('key must not contain NUL characters');
}

export async function getObject(backend: StorageBackend, userToken: string, request: vss.GetObjectRequest): Promise<vss.GetObjectResponse> {
  checkStoreId(request.storeId);
  checkKey(request.key);
  const record = await backend.get(userToken, request.storeId, request.key);
  if (record) {
    return new vss.GetObjectResponse({
      value: new vss.KeyValue({ key: record.key, version: bigIntToInt64(record.version), value: record.value }),
    });
  }
  // A store that never used global versioning is at global version 0, never "not found".
  if (request.key === GLOBAL_VERSION_KEY) {
    return new vss.GetObjectResponse({ value: new vss.KeyValue({ key: GLOBAL_VERSION_KEY, version: bigIntToInt64(0n), value: EMPTY }) });
  }
  throw new NoSuchKeyError();
}

/** PostgreSQL's program_limit_exceeded: a row or index entry larger than the database can store. */
const PROGRAM_LIMIT_EXCEEDED = '54000';

/**
 * A write PostgreSQL refused for its size, as the client's mistake (400) rather than a 500 the
 * client would retry until its budget ran out. The usual one: a key of 600 characters that are
 * 4 bytes each in UTF-8, with its store id and user token, exceeds the ~2.7 KB a primary-key index
 * entry may take (the reference answers 500; PostgreSQL, not a character count, decides, since
 * it compresses an entry that would not fit). The statement rolled back, so nothing was written.
 */
function refusedAsTooLarge(error: unknown): InvalidRequestError | undefined {
  if ((error as { code?: unknown } | null)?.code !== PROGRAM_LIMIT_EXCEEDED) return undefined;
  return new InvalidRequestError(`the database refused an item as too large: ${(error as Error).message} (a key with its store_id and user token must fit in one index entry, about 2.7 KB of UTF-8)`);
}

const tooManyItems = () => new InvalidRequestError(`Number of write items per request should be less than equal to ${MAX_PUT_ITEM_COUNT}`);

/** PutObjectRequest's repeated fields (proto/vss.proto): transaction_items = 3, delete_items = 4. */
const PUT_ITEM_FIELDS = [3, 4];

/**
 * Decodes a PutObjectRequest, refusing more than the item limit before any item is built, so one
 * request cannot hold the event loop (or exhaust memory) while its items are decoded.
 */
export function decodePutObjects(body: Uint8Array): vss.PutObjectRequest {
  const items = countTopLevelFields(body, PUT_ITEM_FIELDS, MAX_PUT_ITEM_COUNT);
  if (items !== undefined && items > MAX_PUT_ITEM_COUNT) throw tooManyItems();
  return vss.PutObjectRequest.decode(strictReader(body));
}

export async function putObjects(backend: StorageBackend, userToken: string, request: vss.PutObjectRequest): Promise<vss.PutObjectResponse> {
  const transactionItems = request.transactionItems ?? [];
  const deleteItems = request.deleteItems ?? [];
  if (transactionItems.length + deleteItems.length > MAX_PUT_ITEM_COUNT) throw tooManyItems();
  checkStoreId(request.storeId);
  const globalVersion = hasField(request, 'globalVersion') ? int64ToBigInt(request.globalVersion) : undefined;
  // One row may be written once per request: repeated keys would make the outcome depend on
  // statement order, which the protocol says clients must not rely on.
  const seen = new Set<string>();
  if (globalVersion !== undefined) seen.add(GLOBAL_VERSION_KEY);
  const claim = (key: string) => {
    checkKey(key);
    if (seen.has(key)) {
      throw new InvalidRequestError(
        key === GLOBAL_VERSION_KEY && globalVersion !== undefined
          ? `key ${JSON.stringify(key)} is the global version row, which this request already writes through global_version`
          : `key ${JSON.stringify(truncate(key))} appears more than once in the request`,
      );
    }
    seen.add(key);
  };
  const puts: PutItem[] = transactionItems.map((item) => {
    const key = item.key ?? '';
    claim(key);
    return { key, version: int64ToBigInt(item.version), value: item.value ?? EMPTY };
  });
  const deletes: DeleteItem[] = deleteItems.map((item) => {
    const key = item.key ?? '';
    claim(key);
    return { key, version: int64ToBigInt(item.version) };
  });
  try {
    await backend.put(userToken, { storeId: request.storeId, transactionItems: puts, globalVersion, deleteItems: deletes });
  } catch (error) {
    throw refusedAsTooLarge(error) ?? error;
  }
  return new vss.PutObjectResponse();
}

export async function deleteObject(backend: StorageBackend, userToken: string, request: vss.DeleteObjectRequest): Promise<vss.DeleteObjectResponse> {
  if (!request.keyValue) throw new InvalidRequestError('key_value missing in DeleteObjectRequest');
  checkStoreId(request.storeId);
  const key = request.keyValue.key ?? '';
  checkKey(key);
  await backend.delete(userToken, request.storeId, { key, version: int64ToBigInt(request.keyValue.version) });
  return new vss.DeleteObjectResponse();
}

export async function listKeyVersions(
  backend: StorageBackend,
  userToken: string,
  request: vss.ListKeyVersionsRequest,
): Promise<vss.ListKeyVersionsResponse> {
  checkStoreId(request.storeId);
  const keyPrefix = hasField(request, 'keyPrefix') ? (request.keyPrefix as string) : '';
  if (keyPrefix.includes('\0')) throw new InvalidRequestError('key_prefix must not contain NUL characters');
  const pageSize = hasField(request, 'pageSize') ? (request.pageSize as number) : LIST_MAX_PAGE_SIZE;
  if (pageSize < 0) throw new InvalidRequestError('page_size must not be negative');
  const firstPage = !hasField(request, 'pageToken');
  const response = new vss.ListKeyVersionsResponse({ keyVersions: [], nextPageToken: '' });
  // As in the reference, the global version is read before (and apart from) the keys, and only
  // first pages carry it: every key listed afterwards was written at or after that version.
  if (firstPage) {
    const record = await backend.get(userToken, request.storeId, GLOBAL_VERSION_KEY);
    response.globalVersion = bigIntToInt64(record?.version ?? 0n);
  }
  if (pageSize === 0) return response;
  let beforeSortOrder: bigint | undefined;
  if (!firstPage) {
    beforeSortOrder = decodePageToken(request.pageToken as string);
    if (beforeSortOrder === undefined) throw new InvalidRequestError('Invalid page token');
  }
  // No key is longer than MAX_KEY_LENGTH, so a longer prefix matches nothing (the reference
  // answers the same empty page). Stopping here spares the server a body-sized prefix: escaping
  // a 30 MB one for LIKE held the event loop, and with it every other request, for 15 s.
  if (!fitsLength(keyPrefix, MAX_KEY_LENGTH)) return response;
  const limit = Math.min(pageSize, LIST_MAX_PAGE_SIZE);
  // One row beyond the page tells whether another page exists, so an exact fit ends with ''.
  const rows = await backend.list(userToken, { storeId: request.storeId, keyPrefix, limit: limit + 1, beforeSortOrder });
  const page = rows.slice(0, limit);
  response.keyVersions = page.map((row) => new vss.KeyValue({ key: row.key, version: bigIntToInt64(row.version) }));
  if (rows.length > limit) response.nextPageToken = encodePageToken(page[page.length - 1].sortOrder);
  return response;
}

function truncate(key: string): string {
  return key.length > 64 ? `${key.slice(0, 64)}…` : key;
}

/**
 * What the decoder found wrong, for the 400's message: whoever debugs a client's encoder needs
 * more than "not valid". protobufjs's own words are kept ("invalid wire type 0 for field 3"),
 * except where they only make sense inside the library.
 */
function decodeProblem(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  if (message.startsWith('index out of range')) return 'a field runs past the end of its message: truncated, or a wrong length';
  if (error instanceof TypeError && /utf-?8/i.test(message)) return 'a string field is not valid UTF-8';
  return message.slice(0, 200);
}

/** How each operation decodes its request, runs, and encodes its response. */
export interface OperationSpec {
  readonly name: VssOperation;
  run(backend: StorageBackend, userToken: string, body: Uint8Array): Promise<Uint8Array>;
}

function operation<Req, Res>(
  name: VssOperation,
  decode: (body: Uint8Array) => Req,
  handler: (backend: StorageBackend, userToken: string, request: Req) => Promise<Res>,
  encode: (response: Res) => Uint8Array,
): OperationSpec {
  return {
    name,
    async run(backend, userToken, body) {
      let request: Req;
      try {
        request = decode(body);
      } catch (error) {
        if (error instanceof InvalidRequestError) throw error;
        throw new InvalidRequestError(`Error parsing request: body is not a valid ${name} request (${decodeProblem(error)})`);
      }
      return encode(await handler(backend, userToken, request));
    },
  };
}

/**
 * Encodes a GetObjectResponse into one buffer of the right size, handed out without a copy.
 * protobufjs's default writer grows to fit the value, then doubles when the nested KeyValue's
 * length prefix needs more than one byte, then copies everything again in finish(): four
 * value-sized buffers at once (512 MiB for a 128 MiB value) and three synchronous copies.
 */
export function encodeGetObjectResponse(response: vss.GetObjectResponse): Uint8Array {
  return vss.GetObjectResponse.encode(response, presizedWriter(keyValueSizeBound(response.value))).finish(true);
}

export const OPERATIONS: Readonly<Record<VssOperation, OperationSpec>> = {
  getObject: operation('getObject', (b) => vss.GetObjectRequest.decode(strictReader(b)), getObject, encodeGetObjectResponse),
  putObjects: operation('putObjects', decodePutObjects, putObjects, (r) => vss.PutObjectResponse.encode(r).finish()),
  deleteObject: operation('deleteObject', (b) => vss.DeleteObjectRequest.decode(strictReader(b)), deleteObject, (r) => vss.DeleteObjectResponse.encode(r).finish()),
  listKeyVersions: operation(
    'listKeyVersions',
    (b) => vss.ListKeyVersionsRequest.decode(strictReader(b)),
    listKeyVersions,
    (r) => vss.ListKeyVersionsResponse.encode(r).finish(),
  ),
};

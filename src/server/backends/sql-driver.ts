/**
 * The little the SQL backend needs from a PostgreSQL driver, so `pg` (a pool of real
 * connections) and PGlite (embedded, one in-process connection) run the same SQL.
 */

export interface SqlQuery {
  /** Prepared-statement name; the same name must always carry the same text. Omit for one-off SQL. */
  name?: string;
  text: string;
}

export interface SqlResult {
  rows: Array<Record<string, unknown>>;
  rowCount: number;
}

export interface SqlSession {
  query(query: SqlQuery, params?: readonly unknown[]): Promise<SqlResult>;
}

export interface SqlDriver extends SqlSession {
  /** Runs `work` in one transaction: COMMIT when it resolves, ROLLBACK (and rethrow) when it rejects. */
  transaction<T>(work: (session: SqlSession) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** SQLSTATE of a driver error, if it has one. */
export function sqlState(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

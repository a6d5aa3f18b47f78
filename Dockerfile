# syntax=docker/dockerfile:1
# The ldk-vss server image: `docker build -t ldk-vss .` then
#   docker run -p 8080:8080 ldk-vss                       (embedded PGlite, data in /var/lib/ldk-vss)
#   docker run -p 8080:8080 -e DATABASE_URL=postgres://… ldk-vss   (PostgreSQL)
# docker-compose.yml runs it next to PostgreSQL.

# --- build: full install (TypeScript is a dev dependency), compile to dist/ ---------------------
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` would compile before the sources are here; the build runs below.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts ./scripts
COPY src ./src
COPY harness ./harness
RUN npm run build

# --- runtime: production dependencies and the compiled server only ----------------------------
FROM node:24-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src

# Listen on every interface inside the container (the server's own default is loopback only).
# Without a database configured the server uses its embedded backend, kept in the volume below.
ENV VSS_BIND_ADDRESS=0.0.0.0:8080 \
    VSS_DATA_DIR=/var/lib/ldk-vss
RUN mkdir -p /var/lib/ldk-vss && chown node:node /var/lib/ldk-vss
VOLUME ["/var/lib/ldk-vss"]

# The official Node image ships an unprivileged `node` user.
USER node
EXPOSE 8080
# /health answers 200 only when the storage backend does. No curl in the slim image: Node's fetch.
# It probes the port of VSS_BIND_ADDRESS as the container sees it (so `-e VSS_BIND_ADDRESS=0.0.0.0:9000`
# stays healthy), on loopback when the server binds every interface (0.0.0.0 or [::]).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "const u=new URL('http://'+((process.env.VSS_BIND_ADDRESS||'').trim()||'127.0.0.1:8080')+'/health');if(u.hostname==='0.0.0.0')u.hostname='127.0.0.1';if(u.hostname==='[::]')u.hostname='[::1]';fetch(u).then((r)=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# The server finishes in-flight requests on SIGTERM, which `docker stop` sends.
STOPSIGNAL SIGTERM
CMD ["node", "dist/src/cli.js", "serve"]

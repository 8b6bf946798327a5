// The peer for `python -m bench.peer_bench`: @supabase/stripe-sync-engine's
// StripeSync.processWebhook behind a minimal node:http server, on PostgreSQL.
//
//   node server.mjs [PORT]      (or PORT=...; DATABASE_URL=postgres://..., STRIPE_WEBHOOK_SECRET=...)
//
// POST (any path) with Stripe's raw body and Stripe-Signature: 200 once processed,
// 400 on a signature error, 500 otherwise. GET /healthz: 200 (served only after migrations).
import { createServer } from 'node:http'
import { createRequire } from 'node:module'

// The package's ESM build calls `__dirname` in runMigrations, which does not exist in an ES
// module; runMigrations then logs the ReferenceError (to no logger) and migrates nothing. The
// CommonJS build of the same version resolves its migrations directory correctly.
const require = createRequire(import.meta.url)
const { StripeSync, runMigrations } = require('@supabase/stripe-sync-engine')

const port = Number(process.argv[2] || process.env.PORT || 8787)
const databaseUrl = process.env.DATABASE_URL
const webhookSecret = process.env.STRIPE_WEBHOOK_SECRET
const schema = process.env.PEER_SCHEMA || 'stripe'
if (!databaseUrl || !webhookSecret) {
  console.error('server.mjs needs DATABASE_URL and STRIPE_WEBHOOK_SECRET')
  process.exit(2)
}

// runMigrations swallows its errors and only reports them to the logger: make them fatal.
const migrationErrors = []
const migrationLogger = {
  info() {},
  warn() {},
  debug() {},
  error(err, message) {
    migrationErrors.push(`${message ?? ''} ${err?.stack ?? err}`)
  },
}
await runMigrations({ databaseUrl, schema, logger: migrationLogger })
if (migrationErrors.length) {
  console.error(`migrations failed:\n${migrationErrors.join('\n')}`)
  process.exit(1)
}

const stripeSync = new StripeSync({
  poolConfig: { connectionString: databaseUrl, max: Number(process.env.PEER_POOL_MAX || 10) },
  schema,
  // Never used: the options below keep processWebhook from calling Stripe's API. An accidental
  // call would fail against this key (and the bench would count the 500s).
  stripeSecretKey: 'sk_test_peer_bench_never_used',
  stripeWebhookSecret: webhookSecret,
  revalidateObjectsViaStripeApi: [],
  backfillRelatedEntities: false,
  autoExpandLists: false,
})

// Distinct failure messages, reported on stderr (first few) and at exit (counts).
const failures = new Map()
function recordFailure(status, err) {
  const key = `${status} ${err?.type ?? err?.name ?? 'Error'}: ${String(err?.message ?? err).slice(0, 300)}`
  const seen = failures.get(key) ?? 0
  failures.set(key, seen + 1)
  if (seen === 0 && failures.size <= 20) console.error(`first failure: ${key}`)
}

const server = createServer((req, res) => {
  if (req.method === 'GET') {
    res.writeHead(req.url === '/healthz' ? 200 : 404, { 'content-type': 'application/json' })
    res.end(req.url === '/healthz' ? '{"ok":true}' : '{"error":"not found"}')
    return
  }
  const chunks = []
  req.on('data', (chunk) => chunks.push(chunk))
  req.on('end', async () => {
    const rawBody = Buffer.concat(chunks)
    try {
      await stripeSync.processWebhook(rawBody, req.headers['stripe-signature'])
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('{"received":true}')
    } catch (err) {
      const status = err?.type === 'StripeSignatureVerificationError' ? 400 : 500
      recordFailure(status, err)
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ error: String(err?.message ?? err) }))
    }
  })
})
server.keepAliveTimeout = 65_000
server.listen(port, '127.0.0.1')

async function shutdown() {
  server.close()
  for (const [key, count] of failures) console.error(`failures ${count}x ${key}`)
  await stripeSync.close().catch(() => {})
  process.exit(0)
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)

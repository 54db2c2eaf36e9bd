// Fetches ipfs://CID through @helia/verified-fetch, using only the given trustless gateway,
// and prints `<status> <byte length> <sha256 hex>` of what it returns.
import { createHash } from 'node:crypto'
import zlib from 'node:zlib'
import workerThreads from 'node:worker_threads'

// The undici that @libp2p/http pulls in wants Node >= 22.19 and binds two newer built-ins at load
// time. On Node 20 give it stand-ins: our node never sends zstd, nothing here is structured-cloned.
const unavailable = () => { throw new Error('not available on this Node version') }
zlib.createZstdDecompress ??= unavailable
workerThreads.markAsUncloneable ??= () => {}
// ES2024, in Node >= 22.
Promise.withResolvers ??= function () {
  let resolve, reject
  const promise = new this((res, rej) => { resolve = res; reject = rej })
  return { promise, resolve, reject }
}

// Helia over HTTP only (no libp2p, no delegated routing): the one gateway given is the only
// provider, and @helia/verified-fetch checks every block it returns.
const { createHeliaLight } = await import('helia')
const { withHTTP } = await import('@helia/http')
const { createVerifiedFetchWithHelia } = await import('@helia/verified-fetch')
const [gateway, cid, format] = process.argv.slice(2)
const helia = withHTTP(createHeliaLight(), {
  delegatedRouters: [],
  recursiveGateways: [gateway],
  allowLocal: true,
  allowInsecure: true
})
// Helia's routing waits forever when the only routers are fallbacks (no regular router ever
// reports "finished"), so add one regular router that knows no providers.
helia.routing.addRouter({ name: 'empty', findProviders: async function * () {} })
await helia.start()
const fetch = await createVerifiedFetchWithHelia(helia)
try {
  const headers = format === 'car' ? { accept: 'application/vnd.ipld.car' } : {}
  const response = await fetch(`ipfs://${cid}`, { headers, signal: AbortSignal.timeout(60000) })
  const body = new Uint8Array(await response.arrayBuffer())
  const hash = createHash('sha256').update(body).digest('hex')
  console.log(`${response.status} ${body.length} ${hash}`)
} finally {
  await fetch.stop()
  await helia.stop()
}

// Prints, one per line, the CID ipfs-unixfs-importer gives each file named on the command line,
// configured like Kubo's `ipfs add --cid-version=1`.
import { createReadStream } from 'node:fs'
import { importer } from 'ipfs-unixfs-importer'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { BlackHoleBlockstore } from 'blockstore-core/black-hole'

const options = {
  cidVersion: 1,
  rawLeaves: true,
  reduceSingleLeafToSelf: true,
  layout: balanced({ maxChildrenPerNode: 174 }),
  chunker: fixedSize({ chunkSize: 262144 }),
  wrapWithDirectory: false
}

for (const path of process.argv.slice(2)) {
  let root
  for await (const entry of importer([{ content: createReadStream(path, { highWaterMark: 1 << 20 }) }], new BlackHoleBlockstore(), options)) {
    root = entry
  }
  console.log(`${root.cid.toString()} ${root.size}`)
}

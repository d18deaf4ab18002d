import fs from 'fs'
import * as display from './package/lib/display.mjs'
import tests from './package/tests/index.mjs'
import surrogate from './package/tests/surrogate-control.mjs'
tests.push(surrogate)
const mine = JSON.parse(fs.readFileSync(process.argv[2]))
const varnish = JSON.parse(fs.readFileSync('./package/results/varnish.json'))
function tally (res) {
  const out = {}
  const failed = []
  for (const suite of tests) for (const t of suite.tests) {
    const r = display.determineTestResult(tests, t.id, res)
    const name = r[2] || r[0]
    const kind = t.kind || 'required'
    const k = `${kind}:${name}`
    out[k] = (out[k] || 0) + 1
    if (kind === 'required' && r[2] !== '✅' && r[2] !== '-') failed.push(`${t.id} [${name}]`)
  }
  return { out, failed }
}
const a = tally(mine); const b = tally(varnish)
console.log('GATEWAY', JSON.stringify(a.out, null, 1))
console.log('VARNISH', JSON.stringify(b.out, null, 1))
console.log('GATEWAY required not passing:\n' + a.failed.join('\n'))
console.log('VARNISH required not passing count:', b.failed.length)

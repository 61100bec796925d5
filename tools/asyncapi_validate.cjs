// asyncapi_validate: parses an AsyncAPI document with @asyncapi/parser and fails on any error.
// usage: NODE_MODULES=<dir> node tools/asyncapi_validate.cjs api-spec/asyncapi.yaml
const path = require('path');
const { Parser, fromFile } = require(path.resolve(process.env.NODE_MODULES, '@asyncapi/parser'));

(async () => {
  const { document, diagnostics } = await fromFile(new Parser(), process.argv[2]).parse();
  const names = ['error', 'warning', 'info', 'hint'];
  for (const d of diagnostics)
    console.log(`${process.argv[2]}: ${names[d.severity]} ${d.code}: ${d.message} at /${d.path.join('/')}`);
  const errors = diagnostics.filter((d) => d.severity <= 1).length; // errors and warnings fail
  console.log(`${process.argv[2]}: ${document ? 'parsed' : 'NOT parsed'}, ${errors} error(s) or warning(s)`);
  process.exit(document && errors === 0 ? 0 : 1);
})().catch((e) => { console.error(e); process.exit(1); });

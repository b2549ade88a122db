// Check relay messages against the contract's JSON Schema in Node.
//
//   node validate_message.mjs callback-message.schema.json < messages.jsonl
//
// One JSON message per input line; prints "valid", or "invalid" and ajv's errors, per
// line. The schema is JSON Schema 2020-12, so it needs Ajv2020 (ajv/dist/2020), and its
// expires_at has "format": "date-time", which ajv compiles only with ajv-formats.
import {readFileSync} from 'node:fs';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

const schema = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const ajv = new Ajv2020();
addFormats(ajv);
const validate = ajv.compile(schema);

for (const line of readFileSync(0, 'utf8').split('\n')) {
  if (!line.trim()) continue;
  const ok = validate(JSON.parse(line));
  console.log(ok ? 'valid' : `invalid ${JSON.stringify(validate.errors)}`);
}

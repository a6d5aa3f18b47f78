import { backendCase } from './helpers.js';
import { conformanceSuite } from './conformance-suite.js';

conformanceSuite(backendCase('pglite'));

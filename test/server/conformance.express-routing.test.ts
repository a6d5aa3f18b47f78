import { backendCase } from './helpers.js';
import { conformanceSuite } from './conformance-suite.js';

// The same behaviour with the operations mounted as express routes (the slower alternative
// kept for benchmark comparisons).
conformanceSuite(backendCase('memory'), { operationRouting: 'express' });

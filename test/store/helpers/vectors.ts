/** LDK Node V1/V0 store keys for seed 0x00..0x3f, from the spec (§B3). */
export const SPEC_SEED = Uint8Array.from({ length: 64 }, (_, i) => i);
export const SPEC_MONITOR = 'deadbeef'.repeat(8) + '_1';
export const V1_SCHEMA_KEY =
  'zAFWxEyRX5by7HK/cWKE1BNnGT3uYb0mo26LYuK7AvrIxdzgx0hugSW1+6pD#VTPFTAJaU/exWkbWSsfSGZP2KebniIRaXoZSRE0u0+RNMgLe4ygCFsy9cJE+8EioW06pDSl67QiwUiK0Pug';
export const V1_MANAGER =
  'zAFWxEyRX5by7HK/cWKE1BNnGT3uYb0mo26LYuK7AvrIxdzgx0hugSW1+6pD#Vl6GlKf1fo6OxqCoqWahsOd/66y9GcMpNBEnlmtlr3+aw553TsZrSGYw2wdFsLbkbFIW';
export const V1_MONITOR =
  'IypYfetDVHWBNmZlyBjDQnuIsNc9Ih1t3ddR9RIq5F4Vg08lDvzjNQ+gAGXzws61BPMJeoY#KJTj2mQoMbnRaxcGEKBi+lJy7wZfXWAIsGXU6jAgRuIWBoGvC4AtvT0YbthUljGEUn/uGLP3y8v/+jRwqc8fHmpPUFQZcJdlNlnChY1yyBwLqs2mz7gTH6wln3w2I6Ch18BAXJVl4xSPlX4rFus';
export const V0_MANAGER = 'Vl6GlKf1fo6OxqCoqWahsOd/66y9GcMpNBEnlmtlr3+aw553TsZrSGYw2wdFsLbkbFIW';

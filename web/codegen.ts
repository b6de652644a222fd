import type { CodegenConfig } from "@graphql-codegen/cli";

// Typed documents from the API's schema: `npm run codegen` rewrites src/gql/ (committed, so a build needs no codegen).
const config: CodegenConfig = {
  schema: "../schema.graphql",
  documents: ["src/**/*.ts", "src/**/*.tsx", "!src/gql/**"],
  ignoreNoDocuments: true,
  generates: {
    "src/gql/": {
      preset: "client",
      presetConfig: { fragmentMasking: false },
      config: {
        scalars: { Credits: "string", DateTime: "string", Metadata: "Record<string, unknown>" },
        enumsAsTypes: true,
        useTypeImports: true,
        skipTypename: false,
      },
    },
  },
};

export default config;

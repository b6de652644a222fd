import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { GraphiQL } from "graphiql";
import "graphiql/graphiql.css";
import "./graphiql.css";
import { createFetcher } from "./fetcher";

// GraphiQL bundled from the graphiql package: no CDN, nothing leaves the machine. Served at GET /graphql.
const DEFAULT_QUERY = `# Creditline GraphiQL
#
# Put your token in Headers below:
#   {"Authorization": "Bearer <token>"}
# then try
#   { me { email credit { balance { total available } } } }
# Subscriptions (graphql-transport-ws, same header):
#   subscription { balanceChanged { reason balance { total } } }

{
  billingConfig {
    gateway
    dashboardTabs
    creditPrice { amount currency }
  }
  plans { id name price { amount currency } creditsPerPeriod }
}
`;

createRoot(document.getElementById("graphiql")!).render(
  <StrictMode>
    <GraphiQL fetcher={createFetcher("/graphql")} defaultQuery={DEFAULT_QUERY} defaultHeaders={'{\n  "Authorization": "Bearer "\n}'} shouldPersistHeaders={false} />
  </StrictMode>,
);

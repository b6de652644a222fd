// Gives a dev server something to show: node scripts/seed.mjs <api> <userToken> <agentToken> <adminToken>
// Spends by two agents on three activities, a top-up with its invoice, a saved card, a subscription, a FREE lot
// that expires in 3 days, and an organization with a pool (the user is OWNER, a second user a MEMBER).
const [api = "http://127.0.0.1:8100", user, agent, admin] = process.argv.slice(2);
async function gql(token, query, variables = {}) {
  const res = await fetch(`${api}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await res.json();
  if (body.errors) console.error(JSON.stringify(body.errors));
  return body.data;
}
const run = Date.now().toString(36);
const me = await gql(user, "{ me { id } }");
const userId = me.me.id;
await gql(user, `mutation { addPaymentMethod(input: {token: "tok_visa"}) { __typename } }`);
await gql(user, `mutation { topUp(input: {credits: "500", paymentToken: "tok_visa", idempotencyKey: "seed-topup-${run}"}) { __typename } }`);
await gql(user, `mutation { subscribe(input: {planId: "starter-monthly", idempotencyKey: "seed-sub-${run}"}) { __typename ... on Error { message } } }`);
const expires = new Date(Date.now() + 3 * 86400e3 + 3600e3).toISOString();
await gql(admin, `mutation { grantCredits(input: {accountId: "${userId}", credits: "20", kind: FREE, expiresAt: "${expires}", reason: "Welcome offer", idempotencyKey: "seed-free-${run}"}) { __typename ... on Error { message } } }`);
const plan = [
  ["support-bot", "answer", "120"],
  ["support-bot", "web_search", "14"],
  ["research-agent", "web_search", "40"],
  ["research-agent", "transcription", "25"],
  ["support-bot", "transcription", "6"],
];
for (let i = 0; i < plan.length * 3; i++) {
  const [agentId, activity, quantity] = plan[i % plan.length];
  await gql(agent, `mutation { spendCredits(input: {userId: "${userId}", agentId: "${agentId}", activity: "${activity}", quantity: "${quantity}", idempotencyKey: "seed-${run}-${i}"}) { __typename ... on Error { message } } }`);
}
const other = await gql(admin, `mutation { createUser(input: {email: "ada-${run}@example.com", externalId: "ada-${run}"}) { ... on CreateUserSuccess { user { id } } } }`);
const org = await gql(user, `mutation { createOrganization(input: {name: "Acme Research"}) { __typename ... on CreateOrganizationSuccess { organization { id } } ... on Error { message } } }`);
const orgId = org?.createOrganization?.organization?.id;
if (orgId) {
  await gql(user, `mutation { enableCreditPool(input: {organizationId: "${orgId}"}) { __typename ... on Error { message } } }`);
  await gql(admin, `mutation { grantCredits(input: {accountId: "${orgId}", credits: "1000", kind: PAID, idempotencyKey: "seed-pool-${run}"}) { __typename ... on Error { message } } }`);
  const otherId = other?.createUser?.user?.id;
  if (otherId) await gql(admin, `mutation { addMember(input: {organizationId: "${orgId}", userId: "${otherId}", roles: [MEMBER]}) { __typename ... on Error { message } } }`);
  await gql(user, `mutation { setMemberBudget(input: {organizationId: "${orgId}", userId: "${otherId}", monthlyCredits: "200"}) { __typename ... on Error { message } } }`);
  for (let i = 0; i < 6; i++) {
    const who = i % 2 ? otherId : userId;
    await gql(agent, `mutation { spendCredits(input: {userId: "${who}", organizationId: "${orgId}", agentId: "${i % 3 ? "support-bot" : "research-agent"}", activity: "${["answer", "web_search", "transcription"][i % 3]}", quantity: "${10 + i * 7}", idempotencyKey: "seed-org-${run}-${i}"}) { __typename ... on Error { message } } }`);
  }
}
console.log("seeded", { userId, orgId });

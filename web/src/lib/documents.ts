import { graphql } from "../gql";

// Every GraphQL document of the page. `npm run codegen` types them from ../schema.graphql into src/gql/.

export const AccountOverviewFields = graphql(`
  fragment AccountOverviewFields on CreditAccount {
    id
    balance { total free paid held available overdraft owed }
    lots(first: 20) {
      edges { node { id kind source amount remaining grantedAt expiresAt status } }
    }
    forecast { burnPerDay runsOutAt basis { from to hours spent available held } }
    alerts(first: 5, status: OPEN) { edges { node { id kind level status openedAt } } }
    subscription { id status planId cancelAtPeriodEnd currentPeriodEnd plan { id name } }
    autoTopUp { enabled status statusMessage }
    usageReport(input: { from: $from, to: $to, granularity: DAY, groupBy: ACTIVITY }) {
      __typename
      ... on UsageReport {
        totals { events credits }
        rows { bucketStart key totals { credits } }
      }
      ... on Error { message }
    }
  }
`);

// The Overview's one query, in two forms (the server's cost limit counts a fragment under a skipped field too, so
// one document with both would be refused): a user token reads its own account and organizations through `me`,
// a portal session (or an organization's pool) reads its account through `node`.
export const OverviewMeQuery = graphql(`
  query OverviewMe($from: DateTime!, $to: DateTime!) {
    billingConfig { ...BillingConfigFields }
    me {
      id
      email
      organizations { roles organization { id name myRoles creditPool { id } } }
      credit { ...AccountOverviewFields }
    }
  }
`);

export const OverviewNodeQuery = graphql(`
  query OverviewNode($accountId: ID!, $withMe: Boolean!, $from: DateTime!, $to: DateTime!) {
    billingConfig { ...BillingConfigFields }
    me @include(if: $withMe) {
      id
      email
      organizations { roles organization { id name myRoles creditPool { id } } }
    }
    node(id: $accountId) {
      __typename
      ... on CreditAccount { ...AccountOverviewFields }
    }
  }
`);

export const BillingConfigFields = graphql(`
  fragment BillingConfigFields on BillingConfig {
    gateway
    legacyGateway
    dashboardTabs
    creditPrice { amount currency }
    topUpMin
    topUpMax
    stripePublishableKey
  }
`);

export const UsageByAgentQuery = graphql(`
  query UsageByAgent($accountId: ID!, $from: DateTime!, $to: DateTime!) {
    node(id: $accountId) {
      __typename
      ... on CreditAccount {
        id
        usageReport(input: { from: $from, to: $to, granularity: DAY, groupBy: AGENT }) {
          __typename
          ... on UsageReport { totals { events credits } rows { bucketStart key totals { credits } } }
          ... on Error { message }
        }
      }
    }
  }
`);

export const BalanceSubscription = graphql(`
  subscription BalanceChanged($accountId: ID) {
    balanceChanged(accountId: $accountId) {
      reason
      delta
      version
      occurredAt
      balance { total free paid held available overdraft owed }
    }
  }
`);

export const TransactionFields = graphql(`
  fragment TransactionFields on Transaction {
    id
    type
    status
    credits
    amount { amount currency }
    failureReason
    checkoutUrl
    createdAt
    completedAt
    invoice { id number signedUrl }
    refunds { id status amount { amount currency } credits }
  }
`);

export const TransactionsQuery = graphql(`
  query Transactions($accountId: ID!, $first: Int!, $after: String, $filter: TransactionFilter) {
    node(id: $accountId) {
      __typename
      ... on CreditAccount {
        id
        transactions(first: $first, after: $after, filter: $filter) {
          pageInfo { hasNextPage endCursor }
          edges { node { ...TransactionFields } }
        }
      }
    }
  }
`);

export const TransactionNodeQuery = graphql(`
  query TransactionNode($id: ID!) {
    node(id: $id) { __typename ... on Transaction { ...TransactionFields } }
  }
`);

export const BillingQuery = graphql(`
  query Billing($accountId: ID!) {
    billingConfig { gateway legacyGateway creditPrice { amount currency } }
    plans { id name price { amount currency } interval creditsPerPeriod creditsExpireAtPeriodEnd subscribable }
    node(id: $accountId) {
      __typename
      ... on CreditAccount {
        id
        subscription {
          id
          status
          planId
          nextPlanId
          currentPeriodStart
          currentPeriodEnd
          cancelAtPeriodEnd
          canceledAt
          statusReason
          nextAttemptAt
          plan { id name price { amount currency } interval creditsPerPeriod }
          nextPlan { id name }
          paymentMethod { id brand last4 }
        }
        paymentMethods { id brand last4 expMonth expYear isDefault }
        transactions(first: 5, filter: { status: PENDING }) { edges { node { ...TransactionFields } } }
      }
    }
  }
`);

export const PaymentMethodsQuery = graphql(`
  query PaymentMethods($accountId: ID!) {
    billingConfig { gateway legacyGateway stripePublishableKey }
    node(id: $accountId) {
      __typename
      ... on CreditAccount {
        id
        paymentMethods { id brand last4 expMonth expYear isDefault }
        autoTopUp {
          enabled
          status
          statusMessage
          threshold
          amount
          target
          monthlyCap
          toppedUpThisMonth
          declines
          disabledReason
          nextAttemptAt
          paymentMethod { id brand last4 }
          pendingTransaction { id status credits }
        }
      }
    }
  }
`);

export const TopUpFormQuery = graphql(`
  query TopUpForm($accountId: ID!) {
    billingConfig { gateway legacyGateway creditPrice { amount currency } topUpMin topUpMax }
    node(id: $accountId) {
      __typename
      ... on CreditAccount { id paymentMethods { id brand last4 expMonth expYear isDefault } }
    }
  }
`);

export const TopUpMutation = graphql(`
  mutation TopUp($input: TopUpInput!) {
    topUp(input: $input) {
      __typename
      ... on TopUpSuccess { checkoutUrl transaction { ...TransactionFields } }
      ... on PaymentDeclined { reason transaction { ...TransactionFields } }
      ... on ValidationError { field }
      ... on Error { message }
    }
  }
`);

export const AddPaymentMethodMutation = graphql(`
  mutation AddPaymentMethod($input: AddPaymentMethodInput!) {
    addPaymentMethod(input: $input) {
      __typename
      ... on AddPaymentMethodSuccess { paymentMethod { id brand last4 expMonth expYear isDefault } }
      ... on ValidationError { field }
      ... on Error { message }
    }
  }
`);

export const SetDefaultPaymentMethodMutation = graphql(`
  mutation SetDefaultPaymentMethod($input: PaymentMethodInput!) {
    setDefaultPaymentMethod(input: $input) {
      __typename
      ... on PaymentMethodsSuccess { paymentMethods { id brand last4 expMonth expYear isDefault } }
      ... on Error { message }
    }
  }
`);

export const RemovePaymentMethodMutation = graphql(`
  mutation RemovePaymentMethod($input: PaymentMethodInput!) {
    removePaymentMethod(input: $input) {
      __typename
      ... on PaymentMethodsSuccess { paymentMethods { id brand last4 expMonth expYear isDefault } }
      ... on Error { message }
    }
  }
`);

export const ConfigureAutoTopUpMutation = graphql(`
  mutation ConfigureAutoTopUp($input: ConfigureAutoTopUpInput!) {
    configureAutoTopUp(input: $input) {
      __typename
      ... on ConfigureAutoTopUpSuccess {
        autoTopUp {
          enabled status statusMessage threshold amount target monthlyCap toppedUpThisMonth declines
          disabledReason nextAttemptAt paymentMethod { id brand last4 } pendingTransaction { id status credits }
        }
      }
      ... on ValidationError { field }
      ... on Error { message }
    }
  }
`);


export const SubscribeMutation = graphql(`
  mutation Subscribe($input: SubscribeInput!) {
    subscribe(input: $input) {
      __typename
      ... on SubscribeSuccess {
        checkoutUrl
        subscription { id status planId cancelAtPeriodEnd currentPeriodEnd }
        transaction { ...TransactionFields }
      }
      ... on PaymentDeclined { reason }
      ... on ValidationError { field }
      ... on Error { message }
    }
  }
`);

export const CancelCheckoutMutation = graphql(`
  mutation CancelCheckout($input: CancelCheckoutInput!) {
    cancelCheckout(input: $input) {
      __typename
      ... on CancelCheckoutSuccess { transaction { ...TransactionFields } }
      ... on CheckoutCompleted { message transaction { ...TransactionFields } }
      ... on ValidationError { message field }
      ... on Error { message }
    }
  }
`);

export const CancelSubscriptionMutation = graphql(`
  mutation CancelSubscription($input: CancelSubscriptionInput!) {
    cancelSubscription(input: $input) {
      __typename
      ... on SubscriptionSuccess { subscription { id status cancelAtPeriodEnd canceledAt currentPeriodEnd } }
      ... on Error { message }
    }
  }
`);

export const ResumeSubscriptionMutation = graphql(`
  mutation ResumeSubscription($input: ResumeSubscriptionInput!) {
    resumeSubscription(input: $input) {
      __typename
      ... on SubscriptionSuccess { subscription { id status cancelAtPeriodEnd canceledAt currentPeriodEnd } }
      ... on Error { message }
    }
  }
`);

export const ChangePlanMutation = graphql(`
  mutation ChangePlan($input: ChangePlanInput!) {
    changePlan(input: $input) {
      __typename
      ... on SubscriptionSuccess { subscription { id status planId nextPlanId nextPlan { id name } } }
      ... on Error { message }
    }
  }
`);

export const CustomerPortalMutation = graphql(`
  mutation CustomerPortal($input: CreateCustomerPortalSessionInput!) {
    createCustomerPortalSession(input: $input) {
      __typename
      ... on CreateCustomerPortalSessionSuccess { url }
      ... on Error { message }
    }
  }
`);

export const SignOutMutation = graphql(`
  mutation SignOut {
    revokePortalSession(input: {}) { __typename ... on Error { message } }
  }
`);

export const OrganizationQuery = graphql(`
  query Organization($orgId: ID!, $from: DateTime!, $to: DateTime!, $admin: Boolean!) {
    node(id: $orgId) {
      __typename
      ... on Organization {
        id
        name
        myRoles
        myMembership { userId email roles monthlyBudget spentThisMonth }
        mine: myUsageReport(input: { from: $from, to: $to, granularity: DAY, groupBy: NONE }) @skip(if: $admin) {
          __typename
          ... on UsageReport { totals { events credits } rows { bucketStart key totals { events credits } } }
          ... on Error { message }
        }
        creditPool @include(if: $admin) { id balance { total free paid held available } }
        members @include(if: $admin) { userId email roles monthlyBudget spentThisMonth }
        byMember: usageReport(input: { from: $from, to: $to, granularity: DAY, groupBy: MEMBER }) @include(if: $admin) {
          __typename
          ... on UsageReport { totals { events credits } rows { bucketStart key totals { events credits } } }
          ... on Error { message }
        }
        byAgent: usageReport(input: { from: $from, to: $to, granularity: MONTH, groupBy: AGENT }) @include(if: $admin) {
          __typename
          ... on UsageReport { rows { key totals { events credits } } }
          ... on Error { message }
        }
        byActivity: usageReport(input: { from: $from, to: $to, granularity: MONTH, groupBy: ACTIVITY }) @include(if: $admin) {
          __typename
          ... on UsageReport { rows { key totals { events credits } } }
          ... on Error { message }
        }
      }
    }
  }
`);

export const SetMemberBudgetMutation = graphql(`
  mutation SetMemberBudget($input: SetMemberBudgetInput!) {
    setMemberBudget(input: $input) {
      __typename
      ... on SetMemberBudgetSuccess { membership { userId email roles monthlyBudget spentThisMonth } }
      ... on ValidationError { field }
      ... on Error { message }
    }
  }
`);

import { describe, expect, it } from "vitest";
import { CombinedError } from "urql";
import { GraphQLError } from "graphql";
import { describeCombinedError, describeResultError } from "./errors";

describe("readable errors", () => {
  it("reads typed union errors", () => {
    expect(describeResultError({ __typename: "PaymentDeclined", message: "x", reason: "Your card was declined." })).toBe(
      "Payment declined: Your card was declined.",
    );
    expect(describeResultError({ __typename: "PaymentMethodInUse", message: "in use" })).toMatch(/auto top-up/);
    expect(describeResultError({ __typename: "ValidationError", message: "credits must be at least 5", field: "credits" })).toBe(
      "Please check the form: credits must be at least 5",
    );
  });

  it("reads extensions.code", () => {
    const error = new CombinedError({
      graphQLErrors: [new GraphQLError("nope", { extensions: { code: "UNAUTHENTICATED" } })],
    });
    expect(describeCombinedError(error)).toMatch(/session has ended/);
    const other = new CombinedError({ graphQLErrors: [new GraphQLError("Query cost 1,650 is over", { extensions: {} })] });
    expect(describeCombinedError(other)).toBe("Query cost 1,650 is over");
    expect(describeCombinedError(new CombinedError({ networkError: new Error("down") }))).toMatch(/could not be reached/);
  });
});

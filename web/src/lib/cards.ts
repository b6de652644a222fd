// The sandbox gateway's test card tokens (gateway/sandbox.py): what each one does.
export const SANDBOX_TOKENS: { token: string; label: string }[] = [
  { token: "tok_visa", label: "Visa 4242 (succeeds)" },
  { token: "tok_mastercard", label: "Mastercard 4444 (succeeds)" },
  { token: "tok_chargeDeclined", label: "Visa 0002 (declined)" },
  { token: "tok_chargeDeclinedInsufficientFunds", label: "Visa 9995 (insufficient funds)" },
  { token: "tok_expiredCard", label: "Visa 0069 (expired card)" },
];

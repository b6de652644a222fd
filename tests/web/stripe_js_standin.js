// A stand-in for https://js.stripe.com/v3, served to the browser tests by Playwright (page.route): the few calls
// of Stripe.js the My Credit page makes (Stripe(key), elements().create("card"), mount, on, clear, destroy,
// createPaymentMethod). Real Stripe.js mounts an iframe of js.stripe.com and makes the PaymentMethod on
// api.stripe.com; this one mounts a plain text field and names the test PaymentMethod of Stripe's test card
// number typed (pm_card_visa for 4242 4242 4242 4242...), which the tests' Stripe API stand-in knows.
(function () {
  "use strict";
  var TEST_CARDS = {
    "4242424242424242": "pm_card_visa",
    "5555555555554444": "pm_card_mastercard",
    "4000000000000002": "pm_card_chargeDeclined",
  };
  window.__stripeJsStandIn = { keys: [] };
  window.Stripe = function (key) {
    if (typeof key !== "string" || key.indexOf("pk_") !== 0) {
      throw new Error("IntegrationError: Invalid API Key provided: " + key);
    }
    window.__stripeJsStandIn.keys.push(key);
    return {
      elements: function () {
        return {
          create: function (type) {
            if (type !== "card") throw new Error("stand-in: only the card Element");
            var handlers = {};
            var input = null;
            var emit = function (name, event) {
              (handlers[name] || []).forEach(function (handler) {
                handler(event);
              });
            };
            var element = {
              mount: function (target) {
                input = document.createElement("input");
                input.setAttribute("aria-label", "Card number");
                input.setAttribute("inputmode", "numeric");
                input.setAttribute("autocomplete", "cc-number");
                input.placeholder = "1234 1234 1234 1234";
                input.style.border = "0";
                input.style.outline = "none";
                input.style.padding = "0";
                input.style.minHeight = "0";
                input.style.background = "transparent";
                input.addEventListener("input", function () {
                  var digits = input.value.replace(/\s/g, "");
                  emit("change", {
                    elementType: "card",
                    empty: digits === "",
                    complete: digits.length === 16,
                    error: digits.length > 16 ? { message: "Your card number is invalid." } : undefined,
                  });
                });
                input.addEventListener("focus", function () {
                  target.classList.add("StripeElement--focus");
                });
                input.addEventListener("blur", function () {
                  target.classList.remove("StripeElement--focus");
                });
                target.classList.add("StripeElement");
                target.appendChild(input);
                element._input = input;
                setTimeout(function () {
                  emit("ready", { elementType: "card" });
                }, 0);
              },
              on: function (name, handler) {
                (handlers[name] = handlers[name] || []).push(handler);
                return element;
              },
              clear: function () {
                if (input) input.value = "";
              },
              destroy: function () {
                if (input) input.remove();
                input = null;
              },
            };
            return element;
          },
        };
      },
      createPaymentMethod: function (options) {
        var card = options && options.card;
        var digits = card && card._input ? card._input.value.replace(/\s/g, "") : "";
        if (options.type !== "card" || !card) {
          return Promise.resolve({ error: { type: "integration_error", message: "stand-in: type card with a card" } });
        }
        if (digits.length < 16) {
          return Promise.resolve({ error: { type: "validation_error", code: "incomplete_number", message: "Your card number is incomplete." } });
        }
        var id = TEST_CARDS[digits];
        if (!id) {
          return Promise.resolve({ error: { type: "validation_error", code: "invalid_number", message: "Your card number is invalid." } });
        }
        return Promise.resolve({ paymentMethod: { id: id, object: "payment_method", type: "card" } });
      },
    };
  };
})();

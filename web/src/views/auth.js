// Sign up, sign in (POST /api/v1/accounts, /api/v1/sessions) and sign out.

import { api, session } from "../api.js";
import { errorText, field, h, say } from "../dom.js";
import { stop as stopLive } from "../live.js";

async function signIn(username, password) {
  const { token } = await api("POST", "/sessions", { body: { username, password } });
  session.save(token, { username });
  const me = await api("GET", "/accounts/me");
  session.saveUser(me);
}

function form(kind) {
  const signup = kind === "signup";
  const username = h("input", { name: "username", autocomplete: "username", required: true, maxlength: 30, autocapitalize: "none" });
  const password = h("input", {
    name: "password",
    type: "password",
    required: true,
    minlength: 8,
    autocomplete: signup ? "new-password" : "current-password",
  });
  const email = signup ? h("input", { name: "email", type: "email", autocomplete: "email" }) : null;
  const error = h("p", { class: "error", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary" }, signup ? "Sign up" : "Sign in");
  const el = h(
    "form",
    {
      class: "card auth",
      onsubmit: async (event) => {
        event.preventDefault();
        error.textContent = "";
        submit.disabled = true;
        try {
          if (signup) {
            const body = { username: username.value, password: password.value };
            if (email.value) body.email = email.value;
            await api("POST", "/accounts", { body });
          }
          await signIn(username.value, password.value);
          say(signup ? `Welcome, ${session.user.username}` : `Signed in as ${session.user.username}`);
          location.hash = "#/";
        } catch (err) {
          error.textContent = errorText(err);
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("h1", {}, signup ? "Create your account" : "Sign in to pinhole"),
    field("Username", username),
    field("Password", password),
    signup ? field("Email (optional)", email) : null,
    error,
    submit,
    h(
      "p",
      {},
      signup ? "Have an account? " : "New here? ",
      h("a", { href: signup ? "#/signin" : "#/signup" }, signup ? "Sign in" : "Sign up"),
    ),
  );
  return el;
}

export function signInView() {
  return form("signin");
}

export function signUpView() {
  return form("signup");
}

export async function signOut() {
  stopLive();
  try {
    await api("DELETE", "/sessions/current");
  } catch {
    // a session already ended is signed out all the same
  }
  session.clear();
  location.hash = "#/signin";
}

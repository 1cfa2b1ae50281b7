// Sign in and register. The API's answers (INVALID_CREDENTIALS, VALIDATION_ERROR with field errors) are shown as they are.
import { register, signIn } from "./api.js";
import { busy, field, h, messageArea } from "./ui.js";

export function authPage(notice) {
  const msgs = messageArea();
  const user = h("input", { id: "login-username", name: "username", autocomplete: "username", required: true });
  const pass = h("input", { id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const loginBtn = h("button", { type: "submit" }, "Sign in");
  const login = h("form", { class: "card", "aria-labelledby": "signin-h" },
    h("h2", { id: "signin-h" }, "Sign in"),
    field("Username or email", user), field("Password", pass), loginBtn);
  login.addEventListener("submit", (e) => { e.preventDefault(); busy(loginBtn, "Signing in…", msgs, () => signIn(user.value, pass.value)); });

  const ru = h("input", { id: "reg-username", name: "username", autocomplete: "username", required: true, minlength: 3, maxlength: 64 });
  const re = h("input", { id: "reg-email", name: "email", type: "email", autocomplete: "email", required: true });
  const rp = h("input", { id: "reg-password", name: "password", type: "password", autocomplete: "new-password", required: true, minlength: 8 });
  const regBtn = h("button", { type: "submit" }, "Create account");
  const reg = h("form", { class: "card", "aria-labelledby": "register-h" },
    h("h2", { id: "register-h" }, "Create an account"),
    field("Username", ru, "3–64 letters, digits, . _ -"), field("Email", re), field("Password", rp, "At least 8 characters"), regBtn);
  reg.addEventListener("submit", (e) => { e.preventDefault(); busy(regBtn, "Creating…", msgs, () => register(ru.value, re.value, rp.value)); });

  return h("main", { id: "main", class: "auth" },
    h("h1", {}, "YMERA console"),
    notice ? h("p", { class: "notice", role: "status" }, notice) : null,
    msgs.el, h("div", { class: "auth-forms" }, login, reg),
    h("p", { class: "hint" }, "Your session stays in this tab's memory only: reloading the page signs you out."));
}

// A real OpenID provider on loopback for the single sign-on browser tests.
//
// node provider.mjs <config.json>: config holds issuer, port, client_id, client_secret,
// redirect_uri, post_logout_redirect_uri and accounts ({login: {email, name, groups}}).
// The provider's own development sign-in form takes a login listed in accounts (any password).
// Prints "ready" once it listens.
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

const provider = new Provider(config.issuer, {
  clients: [{
    client_id: config.client_id,
    client_secret: config.client_secret,
    redirect_uris: [config.redirect_uri],
    post_logout_redirect_uris: [config.post_logout_redirect_uri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'groups'],
  },
  // Scope claims in the ID token itself, as Entra ID and Google put them there.
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['penguinmails-test-oidc-cookie-key'] },
  async findAccount(ctx, sub) {
    const account = config.accounts[sub];
    if (!account) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, email: account.email, email_verified: true, name: account.name,
          groups: account.groups || [] };
      },
    };
  },
});
provider.proxy = false;
provider.listen(config.port, '127.0.0.1', () => {
  console.log('ready');
});

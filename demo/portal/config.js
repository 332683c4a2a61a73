// Runtime configuration of the portal frontend in the compose demo, mounted over /app/dist/config.js.
// Shape copied from the portal's own frontend/config.docker.js (conveyordata/data-product-portal).
// The browser calls the backend directly on its published port, so the backend allows this origin
// (CORS_ALLOWED_ORIGINS=http://localhost:8080 in docker-compose.yml).
const config = (() => {
    return {
        API_BASE_URL: 'http://localhost:5050',
        OIDC_ENABLED: false,
        OIDC_CLIENT_ID: '',
        OIDC_CLIENT_SECRET: '',
        OIDC_AUTHORITY: '',
        OIDC_REDIRECT_URI: '',
        OIDC_POST_LOGOUT_REDIRECT_URI: '',
        THEME_CONFIGURATION: 'datamindedthemeconfig',
        POSTHOG_KEY: '',
        POSTHOG_HOST: '',
        POSTHOG_ENABLED: false,
    };
})();

# The curl samples of docs/http-api.md; docs/examples/http_api.py runs each section against the
# app it serves, with BASE (the API's URL) and API_KEY set.
# --8<-- [start:publish]
curl -sS -X POST "$BASE/publish" -H "X-API-Key: $API_KEY" \
  -H "Content-Type: application/json" \
  -d '{"channel": "room:1", "event": "message", "data": {"text": "hi"}}'
# --8<-- [end:publish]
# --8<-- [start:publish-key]
curl -sS -X POST "$BASE/publish" -H "X-API-Key: $API_KEY" \
  -H "Content-Type: application/json" \
  -d '{"channel": "lobby:1", "event": "message", "data": "hi", "key": "order-42"}'
# --8<-- [end:publish-key]
# --8<-- [start:users]
curl -sS -X POST "$BASE/users/send" -H "X-API-Key: $API_KEY" \
  -H "Content-Type: application/json" -d '{"user": "ann", "event": "poke", "data": null}'
curl -sS -X POST "$BASE/users/disconnect" -H "X-API-Key: $API_KEY" \
  -H "Content-Type: application/json" -d '{"user": "ann", "reason": "signed out"}'
# --8<-- [end:users]
# --8<-- [start:reads]
curl -sS "$BASE/presence?channel=lobby:1" -H "X-API-Key: $API_KEY"
curl -sS "$BASE/history?channel=lobby:1&limit=20" -H "X-API-Key: $API_KEY"
curl -sS "$BASE/counts?timeout=1" -H "X-API-Key: $API_KEY"
# --8<-- [end:reads]
# --8<-- [start:cli]
export FASTAPI_CHANNELS_API_KEY="$API_KEY"
fastapi-channels publish "$BASE" -c room:1 -e message -d '{"text": "hi"}' --key order-43
# --8<-- [end:cli]

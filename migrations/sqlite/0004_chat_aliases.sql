-- Other names of a chat: DingTalk names a chat by chatId and by openConversationId, and its
-- chat_update_owner event carries only the latter. Learned from the events that carry both.
CREATE TABLE chat_aliases (
    provider TEXT NOT NULL,
    tenant   TEXT NOT NULL,
    alias    TEXT NOT NULL,
    chat_id  TEXT NOT NULL,
    PRIMARY KEY (provider, tenant, alias)
);

using System;
using NpcServer.Api.V1;
using NpcServer.Dialogue.Protobuf;

namespace NpcServer.Dialogue
{
    /// <summary>
    /// Turns an exported <see cref="Conversation"/> into a string a save system can store (PlayerPrefs, a JSON
    /// save file) and back. The string is the conversation's protobuf bytes in base64, so it survives any text
    /// format and stays readable by every npcserver client.
    /// </summary>
    public static class ConversationSave
    {
        /// <summary>Encodes a conversation for a save file.</summary>
        public static string ToSaveString(Conversation conversation)
        {
            if (conversation == null) throw new ArgumentNullException("conversation");
            return Convert.ToBase64String(ProtoWriter.Serialize(conversation));
        }

        /// <summary>Decodes a save string; throws <see cref="FormatException"/> if it is not one.</summary>
        public static Conversation FromSaveString(string saved)
        {
            if (string.IsNullOrEmpty(saved)) throw new FormatException("the saved conversation string is empty");
            byte[] bytes;
            try
            {
                bytes = Convert.FromBase64String(saved.Trim());
            }
            catch (FormatException)
            {
                throw new FormatException("the saved conversation is not base64; was it written by ToSaveString?");
            }
            try
            {
                return Conversation.ParseFrom(bytes);
            }
            catch (ProtoDecodeException e)
            {
                throw new FormatException("the saved conversation is corrupt: " + e.Message);
            }
        }
    }
}
